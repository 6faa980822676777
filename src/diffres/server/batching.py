"""Micro-batching: inputs of any length from concurrent requests share one padded onnxruntime call.

Which inputs go together, and the padded length, is `diffres.server.batch_policy.choose` (bounded padding,
a fixed grid of lengths). Admission is by lease and by work (server/admission.py): a request
reserves work units before it decodes anything, so an overloaded server says 503 at once instead
of queueing without bound, and an admitted request never fails half-way for lack of room.
Order is fair between requests: every request's k-th queued input comes before any request's
(k+1)-th, and among those the request served least recently goes first, so a short clip is in
the next call even while long files have hundreds of windows queued. Inputs of a request that
went away (cancelled futures) drop out before they run. Session calls run in the batcher's own
threads, `concurrent_calls` at once (server.loaded.call_layout: on CPU one single-threaded call per
core); the event loop only moves futures around.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from diffres.server.admission import Admission, AdmissionLimits
from diffres.server.batch_policy import BatchPolicy, choose
from diffres.errors import Unavailable
from diffres.runner import DEFAULT_OUTPUTS, RowOutput

log = logging.getLogger(__name__)

# rows, padded length, outputs -> one RowOutput per row (OnnxModel.run)
RunBatch = Callable[[list[np.ndarray], int, Sequence[str]], list[RowOutput]]
_sequence = itertools.count()


@dataclass
class _Item:
    x: np.ndarray
    outputs: tuple[str, ...]
    future: asyncio.Future[RowOutput]
    lease: Lease
    enqueued: float = field(default_factory=time.monotonic)
    seq: int = field(default_factory=lambda: next(_sequence))


@dataclass
class BatchStats:
    """What one session call looked like, for metrics."""

    size: int
    queue_waits: list[float]
    run_seconds: float
    samples: int  # rows x padded length
    padding: int  # of which zeros


class Lease:
    """Work units reserved in a batcher for one request: at most `slots` inputs in flight at once.

    `last_served` (the number of the call that last ran one of its inputs) is its place in the fair
    rotation; a long job also holds one of the model's long-job turns until released.
    """

    def __init__(self, batcher: MicroBatcher, slots: int, units: int, long_turn: bool = False) -> None:
        self._batcher = batcher
        self.slots = slots
        self.units = units
        self.long_turn = long_turn
        self.last_served = -1
        self._released = False

    async def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[str] = DEFAULT_OUTPUTS) -> list[RowOutput]:
        """Results for `inputs` (1-D arrays), in order; at most `slots` at a time."""
        if len(inputs) > self.slots:
            raise ValueError(f"{len(inputs)} inputs exceed the {self.slots} reserved slots")
        if self._released:
            raise RuntimeError("lease already released")
        futures = [self._batcher._enqueue(self, x, tuple(outputs)) for x in inputs]
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:  # a cancelled request's inputs leave the queue before they run
                f.cancel()
            raise

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._batcher.admission.give(self.units)
            if self.long_turn:
                self._batcher.admission.end_long_turn()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LeaseRunner:
    """The pipeline's runner in the service: rows from a worker thread go through the lease's batcher.

    The pipeline runs in a worker thread (diffres.server.threads); each call hands its rows to the
    event loop, where they join the micro-batcher's queue, and waits for their outputs. `cancel`
    (from the loop, when the request is cancelled) takes queued rows out and ends that wait.
    """

    def __init__(self, lease: Lease, loop: asyncio.AbstractEventLoop) -> None:
        self.lease = lease
        self.loop = loop
        self.slots = lease.slots
        self._waiting: concurrent.futures.Future[list[RowOutput]] | None = None
        self._cancelled = False

    def __call__(self, rows: Sequence[np.ndarray], outputs: Sequence[str]) -> list[RowOutput]:
        if self._cancelled:
            raise concurrent.futures.CancelledError("request cancelled")
        self._waiting = asyncio.run_coroutine_threadsafe(self.lease.run(rows, outputs), self.loop)
        if self._cancelled:  # cancelled while the rows were being handed over
            self._waiting.cancel()
        return self._waiting.result()

    def cancel(self) -> None:
        self._cancelled = True
        if self._waiting is not None:
            self._waiting.cancel()


class MicroBatcher:
    """Collects inputs until the policy's batch is full or the oldest has waited `max_wait_s`.

    `run_batch` runs in this batcher's own threads, at most `concurrent_calls` at once; the next
    batch is only taken when a call can start, so it keeps filling while the others run.
    """

    def __init__(self, name: str, run_batch: RunBatch, policy: BatchPolicy, *, max_wait_s: float,
                 queue_limit: int, retry_after_s: int = 1, on_batch: Callable[[BatchStats], None] | None = None,
                 on_reject: Callable[[str], None] | None = None, max_long_jobs: int = 4,
                 long_job_queue: int = 64, concurrent_calls: int = 1) -> None:
        self.name = name
        self._run_batch = run_batch
        self.policy = policy
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self.retry_after_s = retry_after_s
        self.admission = Admission(name, AdmissionLimits(
            capacity=queue_limit, request_share=min(policy.max_batch, queue_limit), long_jobs=max_long_jobs,
            long_line=long_job_queue, retry_after_s=retry_after_s), on_reject)
        self._on_batch = on_batch
        self._pending: list[_Item] = []
        self._calls = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._concurrent_calls = concurrent_calls
        self._running: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=concurrent_calls, thread_name_prefix=f"ort-{name}")

    @property
    def max_batch(self) -> int:
        return self.policy.max_batch

    @property
    def depth(self) -> int:
        """Inputs waiting for a batch (not counting the ones running)."""
        return len(self._pending)

    @property
    def reserved(self) -> int:
        """Work units held by admitted requests."""
        return self.admission.reserved

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.name}")

    def _check_open(self) -> None:
        if self._closing or self._task is None:
            raise Unavailable("server is shutting down", headers={"Retry-After": str(self.retry_after_s)})

    def check_admission(self, units: int = 1) -> None:
        """503 now if a request of `units` would be refused: call it before reading a request body."""
        self._check_open()
        self.admission.check(units)

    def lease(self, slots: int, row_units: int = 1) -> Lease:
        """Room for `slots` concurrent inputs of `row_units` each, or 503 now: never queue unboundedly.

        A request holds at most its share (`request_share` units), but always room for one row.
        """
        self._check_open()
        share = self.admission.limits.request_share
        slots = max(1, min(slots, share // max(1, row_units)))
        units = slots * max(1, row_units)
        self.admission.take(units)
        return Lease(self, slots, units)

    async def long_lease(self) -> Lease:
        """A lease for windowed audio: waits (cancellably) for a long-job turn, 503 when the line is full."""
        self._check_open()
        self.admission.check_long()
        await self.admission.long_turn()
        try:
            self._check_open()
            slots = self.admission.limits.request_share
            self.admission.take(slots)
        except BaseException:
            self.admission.end_long_turn()
            raise
        return Lease(self, slots, slots, long_turn=True)

    def _enqueue(self, lease: Lease, x: np.ndarray, outputs: tuple[str, ...]) -> asyncio.Future[RowOutput]:
        future: asyncio.Future[RowOutput] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(np.ascontiguousarray(x, dtype=np.float32), outputs, future, lease))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Stop taking leases, run everything already queued (no waiting for stragglers), stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _fair_order(self) -> list[_Item]:
        """Live inputs in fair order: by rank within their request, then least recently served request."""
        self._pending = [i for i in self._pending if not i.future.done()]  # cancelled requests drop out
        ranks: dict[int, int] = {}
        keyed = []
        for item in self._pending:  # enqueue order, so a request's rank 0 is its oldest input
            rank = ranks.get(id(item.lease), 0)
            ranks[id(item.lease)] = rank + 1
            keyed.append(((rank, item.lease.last_served, item.seq), item))
        keyed.sort(key=lambda pair: pair[0])
        return [item for _, item in keyed]

    def _plan(self) -> tuple[list[_Item], int]:
        """The policy's next batch over the live queue, headed by the first input in fair order."""
        order = self._fair_order()
        if not order:
            return [], 0
        plan = choose([len(i.x) for i in order], self.policy)
        return [order[r] for r in plan.rows], plan.padded_length

    async def _collect(self) -> tuple[list[_Item], int]:
        """Wait until the head input's batch is full or its wait expires; take that batch."""
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
        self._calls += 1
        for item in batch:
            item.lease.last_served = self._calls
        return batch, padded

    async def _worker(self) -> None:
        slots = asyncio.Semaphore(self._concurrent_calls)
        while True:
            if not self._pending:
                if self._closing:
                    await asyncio.gather(*self._running)
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await slots.acquire()  # a batch is only taken when a call can start: it fills while others run
            batch, padded = await self._collect()
            if not batch:
                slots.release()
                continue
            call = asyncio.get_running_loop().create_task(self._run(batch, padded))
            self._running.add(call)
            call.add_done_callback(lambda done: (self._running.discard(done), slots.release()))

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
