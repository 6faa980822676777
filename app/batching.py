"""Micro-batching: inputs of one shape from concurrent requests go to onnxruntime in one call.

Admission is by lease: a request reserves queue slots before it decodes anything, so an
overloaded server says 503 at once instead of queueing without bound, and an admitted request
never fails half-way for lack of room (it never has more inputs in flight than it reserved).
Session calls run in a dedicated thread; the event loop only moves futures around.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from app.errors import Overloaded, Unavailable

log = logging.getLogger("app.batching")

R = TypeVar("R")


@dataclass
class _Item(Generic[R]):
    x: np.ndarray
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What one session call looked like, for metrics."""

    size: int
    queue_waits: list[float]
    run_seconds: float


class Lease(Generic[R]):
    """`slots` reserved places in a batcher's queue, held for one request."""

    def __init__(self, batcher: MicroBatcher[R], slots: int) -> None:
        self._batcher = batcher
        self.slots = slots
        self._released = False

    async def run(self, inputs: Sequence[np.ndarray]) -> list[R]:
        """Results for `inputs` (1-D arrays), in order; at most `slots` at a time."""
        if len(inputs) > self.slots:
            raise ValueError(f"{len(inputs)} inputs exceed the {self.slots} reserved slots")
        if self._released:
            raise RuntimeError("lease already released")
        futures = [self._batcher._enqueue(x) for x in inputs]
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._batcher._reserved -= self.slots

    def __enter__(self) -> Lease[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MicroBatcher(Generic[R]):
    """Collects same-length inputs up to `max_batch` or `max_wait_s`, runs them as one batch.

    `run_batch` gets a [batch, samples] array and returns one result per row; it runs in this
    batcher's own single thread, one batch at a time (onnxruntime already uses every core per call).
    """

    def __init__(self, name: str, run_batch: Callable[[np.ndarray], list[R]], *, max_batch: int,
                 max_wait_s: float, queue_limit: int, retry_after_s: int = 1,
                 on_batch: Callable[[BatchStats], None] | None = None,
                 on_reject: Callable[[], None] | None = None) -> None:
        self.name = name
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self.retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._on_reject = on_reject
        self._pending: list[_Item[R]] = []
        self._reserved = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")

    @property
    def depth(self) -> int:
        """Inputs waiting for a batch (not counting the one running)."""
        return len(self._pending)

    @property
    def reserved(self) -> int:
        return self._reserved

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    def lease(self, slots: int) -> Lease[R]:
        """Reserve room for `slots` concurrent inputs or fail now with 503: never queue unboundedly."""
        if self._closing or self._task is None:
            raise Unavailable("server is shutting down", headers={"Retry-After": str(self.retry_after_s)})
        slots = max(1, min(slots, self.max_batch, self.queue_limit))
        if self._reserved + slots > self.queue_limit:
            if self._on_reject is not None:
                self._on_reject()
            raise Overloaded(f"model '{self.name}' is at capacity ({self.queue_limit} inputs queued or "
                             "in flight); retry later", headers={"Retry-After": str(self.retry_after_s)})
        self._reserved += slots
        return Lease(self, slots)

    def _enqueue(self, x: np.ndarray) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(np.ascontiguousarray(x, dtype=np.float32), future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Stop taking leases, run everything already queued (no waiting for stragglers), stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _take(self, length: int) -> list[_Item[R]]:
        batch: list[_Item[R]] = []
        rest: list[_Item[R]] = []
        for item in self._pending:
            if len(batch) < self.max_batch and len(item.x) == length:
                batch.append(item)
            else:
                rest.append(item)
        self._pending = rest
        return [i for i in batch if not i.future.done()]  # a cancelled request's inputs are dropped

    def _count(self, length: int) -> int:
        return sum(1 for item in self._pending if len(item.x) == length)

    async def _collect(self) -> list[_Item[R]]:
        """Wait for the oldest input's shape to fill a batch, or its wait to expire."""
        head = self._pending[0]
        length = len(head.x)
        deadline = head.enqueued + self.max_wait_s
        while not self._closing and self._count(length) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return self._take(length)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._collect()
            if not batch:
                continue
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, np.stack([i.x for i in batch]))
            except Exception as exc:  # one poisoned input must not fail its batch-mates: retry them alone
                log.exception("batch of %d failed on model %s", len(batch), self.name)
                if len(batch) > 1:
                    await self._run_alone(batch)
                else:
                    self._fail(batch[0], exc)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
            if self._on_batch is not None:
                self._on_batch(BatchStats(len(batch), [started - i.enqueued for i in batch],
                                          time.monotonic() - started))

    async def _run_alone(self, batch: list[_Item[R]]) -> None:
        loop = asyncio.get_running_loop()
        for item in batch:
            try:
                [result] = await loop.run_in_executor(self._executor, self._run_batch, item.x[None, :])
            except Exception as exc:
                self._fail(item, exc)
            else:
                if not item.future.done():
                    item.future.set_result(result)

    @staticmethod
    def _fail(item: _Item[R], exc: Exception) -> None:
        if not item.future.done():
            item.future.set_exception(exc)
