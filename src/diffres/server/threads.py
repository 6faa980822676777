"""Blocking work (decoding, a whole classification) in a worker thread that a cancelled request waits for.

A thread cannot be stopped. When a request is cancelled (its client went away) while a thread
still reads a decoder, the request must not go on to close that decoder or its file: libsndfile
crashes the process (segfault) when `sf_close` runs under a concurrent `sf_readf`. So a cancelled
caller asks the work to stop (`on_cancel`, e.g. `LeaseRunner.cancel`: its queued rows leave the
batcher and the thread's wait for them ends), waits for the thread, then sees its CancelledError.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# The service's blocking work runs in this pool, not anyio's (starlette's run_in_threadpool): a hop through
# anyio's capacity limiter and worker queue costs about twice the CPU of a plain executor's. Same bound on
# threads as anyio's default limiter: beyond it, work waits for a thread.
MAX_THREADS = 40
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="diffres-work")
        return _pool


async def run_to_completion(fn: Callable[..., T], *args: object, on_cancel: Callable[[], None] | None = None) -> T:
    """`fn(*args)` in the thread pool; cancellation is delivered only once the thread has finished."""
    context = contextvars.copy_context()  # the request id and the like, as anyio's threads see them too
    work = asyncio.get_running_loop().run_in_executor(pool(), context.run, fn, *args)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        while not work.done():
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                continue  # cancelled again: still wait, the thread holds the decoder
            except Exception:  # noqa: BLE001 - its outcome no longer matters, only that it ended
                break
        raise
