"""Admission by work and fair batching (server/admission.py, server/batching.py), without a model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from diffres.errors import Overloaded
from diffres.runner import RowOutput
from diffres.server.admission import Admission, AdmissionLimits, ByteBudget, row_units
from diffres.server.batch_policy import BatchPolicy, LengthGrid
from diffres.server.batching import MicroBatcher

pytestmark = pytest.mark.anyio
WINDOW = 8


def recording_batcher(gate: threading.Event, **kwargs: object) -> tuple[MicroBatcher, list[list[float]]]:
    """A batcher whose calls wait for `gate` and record each call's rows (by their first value)."""
    calls: list[list[float]] = []

    def run(rows: list[np.ndarray], pad_to: int, outputs: object) -> list[RowOutput]:
        assert gate.wait(10)
        calls.append([float(r[0]) for r in rows])
        return [RowOutput(np.array([r.sum()]), None, len(r), len(r)) for r in rows]

    policy = BatchPolicy(max_batch=4, max_samples=4 * WINDOW, max_padding=0.1,
                         grid=LengthGrid(anchor=WINDOW, steps_per_octave=8))
    options = {"max_wait_s": 0.0, "queue_limit": 64} | kwargs
    return MicroBatcher("t", run, policy, **options), calls  # type: ignore[arg-type]


async def test_a_short_clip_goes_into_the_next_call_while_long_jobs_have_windows_queued() -> None:
    gate = threading.Event()
    batcher, calls = recording_batcher(gate)
    batcher.start()
    longs = [await batcher.long_lease() for _ in range(3)]  # 3 long jobs, 4 windows each, all queued
    pending = [asyncio.ensure_future(lease.run([np.full(WINDOW, 10 * j + k, np.float32) for k in range(4)]))
               for j, lease in enumerate(longs)]
    await asyncio.sleep(0.05)  # the first call (blocked on the gate) has taken 4 windows
    short = batcher.lease(1)
    clip = asyncio.ensure_future(short.run([np.full(WINDOW, 99, np.float32)]))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(clip, *pending)
    assert 99.0 in calls[1], calls  # not behind the 8 windows still queued
    assert calls[0] == [0.0, 10.0, 20.0, 1.0]  # fair: each job's first window before anyone's second
    for lease in [*longs, short]:
        lease.release()
    await batcher.close()


async def test_long_jobs_take_turns_wait_in_a_bounded_line_and_hand_over() -> None:
    admission = Admission("m", AdmissionLimits(capacity=100, request_share=4, long_jobs=2, long_line=1))
    await admission.long_turn()
    await admission.long_turn()
    waiter = asyncio.ensure_future(admission.long_turn())
    await asyncio.sleep(0)
    assert not waiter.done() and admission.long_waiting == 1
    with pytest.raises(Overloaded) as err:  # two running, one waiting: the line is full
        await admission.long_turn()
    assert err.value.headers["Retry-After"] and "DIFFRES_MAX_LONG_JOBS" in err.value.message
    admission.end_long_turn()  # a turn ends: the waiter takes it over
    await asyncio.wait_for(waiter, 1)
    assert admission.long_running == 2 and admission.long_waiting == 0
    cancelled = asyncio.ensure_future(admission.long_turn())
    await asyncio.sleep(0)
    cancelled.cancel()  # a client that leaves the line gives up its place
    await asyncio.sleep(0)
    admission.end_long_turn()
    admission.end_long_turn()
    assert admission.long_running == 0


async def test_units_are_work_not_requests_and_one_request_holds_at_most_its_share() -> None:
    gate = threading.Event()
    batcher, _ = recording_batcher(gate, queue_limit=10)
    batcher.start()
    assert row_units(WINDOW, WINDOW) == 1 and row_units(3 * WINDOW, WINDOW) == 3 and row_units(1, WINDOW) == 1
    whole = batcher.lease(1, row_units=3)  # one clip of three windows costs three units
    many = batcher.lease(100)  # asks for 100 slots, gets its share (max_batch = 4)
    assert (whole.units, many.slots, many.units, batcher.reserved) == (3, 4, 4, 7)
    with pytest.raises(Overloaded):
        batcher.check_admission(4)  # 7 + 4 > 10: refused before any body would be read
    batcher.check_admission(3)
    for lease in (whole, many):
        lease.release()
    assert batcher.reserved == 0
    gate.set()
    await batcher.close()


def test_byte_budget_refuses_at_once_and_frees() -> None:
    budget = ByteBudget(100)
    taken = budget.take(60)
    with pytest.raises(Overloaded):
        budget.take(60)
    budget.give(taken)
    assert budget.take(10**9) == 100  # one body may always use the whole budget
