"""Micro-batching: inputs of any length from concurrent requests share one padded onnxruntime call.

Which inputs go together, and the padded length, is `app.batch_policy.choose` (bounded padding,
a fixed grid of lengths). Admission is by lease: a request reserves queue slots before it decodes
anything, so an overloaded server says 503 at once instead of queueing without bound, and an
admitted request never fails half-way for lack of room (it never has more inputs in flight than
it reserved). Session calls run in a dedicated thread; the event loop only moves futures around.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from app.batch_policy import BatchPolicy, choose
from app.errors import Overloaded, Unavailable
from runtime.runner import DEFAULT_OUTPUTS, RowOutput

log = logging.getLogger("app.batching")

# rows, padded length, outputs -> one RowOutput per row (OnnxModel.run)
RunBatch = Callable[[list[np.ndarray], int, Sequence[str]], list[RowOutput]]


@dataclass
class _Item:
    x: np.ndarray
    outputs: tuple[str, ...]
    future: asyncio.Future[RowOutput]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What one session call looked like, for metrics."""

    size: int
    queue_waits: list[float]
    run_seconds: float
    samples: int  # rows x padded length
    padding: int  # of which zeros


class Lease:
    """`slots` reserved places in a batcher's queue, held for one request."""

    def __init__(self, batcher: MicroBatcher, slots: int) -> None:
        self._batcher = batcher
        self.slots = slots
        self._released = False

    async def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[str] = DEFAULT_OUTPUTS) -> list[RowOutput]:
        """Results for `inputs` (1-D arrays), in order; at most `slots` at a time."""
        if len(inputs) > self.slots:
            raise ValueError(f"{len(inputs)} inputs exceed the {self.slots} reserved slots")
        if self._released:
            raise RuntimeError("lease already released")
        futures = [self._batcher._enqueue(x, tuple(outputs)) for x in inputs]
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

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MicroBatcher:
    """Collects inputs until the policy's batch is full or the oldest has waited `max_wait_s`.

    `run_batch` runs in this batcher's own single thread, one call at a time (onnxruntime already
    uses every core per call).
    """

    def __init__(self, name: str, run_batch: RunBatch, policy: BatchPolicy, *, max_wait_s: float,
                 queue_limit: int, retry_after_s: int = 1, on_batch: Callable[[BatchStats], None] | None = None,
                 on_reject: Callable[[], None] | None = None) -> None:
        self.name = name
        self._run_batch = run_batch
        self.policy = policy
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self.retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._on_reject = on_reject
        self._pending: list[_Item] = []
        self._reserved = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")

    @property
    def max_batch(self) -> int:
        return self.policy.max_batch

    @property
    def depth(self) -> int:
        """Inputs waiting for a batch (not counting the ones running)."""
        return len(self._pending)

    @property
    def reserved(self) -> int:
        return self._reserved

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    def lease(self, slots: int) -> Lease:
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

    def _enqueue(self, x: np.ndarray, outputs: tuple[str, ...]) -> asyncio.Future[RowOutput]:
        future: asyncio.Future[RowOutput] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(np.ascontiguousarray(x, dtype=np.float32), outputs, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Stop taking leases, run everything already queued (no waiting for stragglers), stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _plan(self) -> tuple[list[_Item], int]:
        """The policy's next batch over the live queue (oldest first) and its padded length."""
        self._pending = [i for i in self._pending if not i.future.done()]  # cancelled requests drop out
        if not self._pending:
            return [], 0
        plan = choose([len(i.x) for i in self._pending], self.policy)
        return [self._pending[r] for r in plan.rows], plan.padded_length

    async def _collect(self) -> tuple[list[_Item], int]:
        """Wait until the oldest input's batch is full or its wait expires; take that batch."""
        batch, padded = self._plan()
        deadline = batch[0].enqueued + self.max_wait_s if batch else 0.0
        while batch and not self._closing and len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            batch, padded = self._plan()
        taken = {id(i) for i in batch}
        self._pending = [i for i in self._pending if id(i) not in taken]
        return batch, padded

    async def _worker(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, padded = await self._collect()
            if batch:
                await self._run(batch, padded)

    async def _run(self, batch: list[_Item], padded: int) -> None:
        loop = asyncio.get_running_loop()
        outputs = tuple(dict.fromkeys(o for i in batch for o in i.outputs))  # what any row asked for
        started = time.monotonic()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [i.x for i in batch], padded,
                                                 outputs)
        except Exception as exc:  # one poisoned input must not fail its batch-mates: retry them alone
            log.exception("batch of %d failed on model %s", len(batch), self.name)
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            for item in batch:
                await self._run([item], self.policy.grid.bucket(len(item.x)))
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
        if self._on_batch is not None:
            useful = sum(len(i.x) for i in batch)
            self._on_batch(BatchStats(len(batch), [started - i.enqueued for i in batch], time.monotonic() - started,
                                      samples=len(batch) * padded, padding=len(batch) * padded - useful))

    @staticmethod
    def _fail(item: _Item, exc: Exception) -> None:
        if not item.future.done():
            item.future.set_exception(exc)
