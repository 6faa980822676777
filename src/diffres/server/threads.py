"""Blocking work (decoding, a whole classification) in a worker thread that a cancelled request waits for.

A thread cannot be stopped. When a request is cancelled (its client went away) while a thread
still reads a decoder, the request must not go on to close that decoder or its file: libsndfile
crashes the process (segfault) when `sf_close` runs under a concurrent `sf_readf`. So a cancelled
caller asks the work to stop (`on_cancel`, e.g. `LeaseRunner.cancel`: its queued rows leave the
batcher and the thread's wait for them ends), waits for the thread, then sees its CancelledError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


async def run_to_completion(fn: Callable[..., T], *args: object, on_cancel: Callable[[], None] | None = None) -> T:
    """`fn(*args)` in the thread pool; cancellation is delivered only once the thread has finished."""
    work = asyncio.ensure_future(run_in_threadpool(fn, *args))
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
