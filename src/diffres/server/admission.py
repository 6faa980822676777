"""Admission by work, per model: what a request may hold, and who waits for a turn at long audio.

Why: counting requests lets sixteen tiny uploads of long silent audio hold the whole queue. Here
the unit is work: one *unit* is one window-length row queued or running (a whole clip of up to
three windows costs up to three). Each request holds at most `request_share` units at a time,
the model's queue holds `capacity` units, and windowed (long) audio also needs one of
`long_jobs` turns; up to `long_line` long jobs wait for a turn in order, holding no units, and
anything beyond is refused with 503 at once. Short clips therefore always find room while long
jobs run, and the batcher's fair order (server/batching.py) interleaves them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from diffres.errors import Overloaded


@dataclass(frozen=True)
class AdmissionLimits:
    """Per-model limits, all in work units (window-length rows) except the two long-job counts."""

    capacity: int
    request_share: int
    long_jobs: int
    long_line: int
    retry_after_s: int = 1


def row_units(samples: int, window: int) -> int:
    """Work units of one row: window-length rows cost 1, a whole clip of up to 3 windows up to 3."""
    return max(1, math.ceil(samples / max(1, window)))


class Admission:
    """Units reserved against `capacity`, and the long-job turns with their bounded waiting line."""

    def __init__(self, name: str, limits: AdmissionLimits, on_reject: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.limits = limits
        self._on_reject = on_reject
        self.reserved = 0
        self.long_running = 0
        self._line: deque[asyncio.Future[None]] = deque()

    @property
    def long_waiting(self) -> int:
        return sum(1 for f in self._line if not f.done())

    def _refuse(self, reason: str, message: str) -> Overloaded:
        if self._on_reject is not None:
            self._on_reject(reason)
        return Overloaded(message, headers={"Retry-After": str(self.limits.retry_after_s)})

    def check(self, units: int = 1) -> None:
        """503 now when not even `units` would be admitted: decided before a request body is read."""
        if self.reserved + units > self.limits.capacity:
            raise self._refuse("queue", f"model '{self.name}' is at capacity ({self.limits.capacity} work units "
                                        "queued or running; DIFFRES_QUEUE_LIMIT); retry later")

    def take(self, units: int) -> None:
        """Reserve `units` or refuse with 503 (never queue without bound)."""
        self.check(units)
        self.reserved += units

    def give(self, units: int) -> None:
        self.reserved -= units

    def check_long(self) -> None:
        """503 now when a long job would find neither a turn nor a place in the line."""
        if self.long_running >= self.limits.long_jobs and self.long_waiting >= self.limits.long_line:
            raise self._refuse("long_jobs", f"model '{self.name}' has {self.limits.long_jobs} long jobs running and "
                                            f"{self.limits.long_line} waiting (DIFFRES_MAX_LONG_JOBS, "
                                            "DIFFRES_LONG_JOB_QUEUE); retry later")

    async def long_turn(self) -> None:
        """Wait in line for one of the long-job turns (cancellable); `end_long_turn` hands it on."""
        if self.long_running < self.limits.long_jobs and not self.long_waiting:
            self.long_running += 1
            return
        self.check_long()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # the turn was handed over just as we left: pass it on
                self.end_long_turn()
            raise

    def end_long_turn(self) -> None:
        """The first live waiter takes over the turn; with nobody waiting it is free again."""
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.long_running -= 1


class ByteBudget:
    """Bytes of request bodies held in memory at once (the /v2 routes): 503 now when a body would not fit."""

    def __init__(self, capacity: int, retry_after_s: int = 1) -> None:
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self.held = 0

    def take(self, amount: int) -> int:
        """Reserve `amount` bytes (one body may always use the whole budget) or refuse with 503."""
        amount = min(amount, self.capacity)
        if self.held + amount > self.capacity:
            raise Overloaded(f"request bodies in memory are at their {self.capacity} byte budget "
                             "(DIFFRES_V2_BODY_BUDGET_BYTES); retry later",
                             headers={"Retry-After": str(self.retry_after_s)})
        self.held += amount
        return amount

    def give(self, amount: int) -> None:
        self.held -= amount
