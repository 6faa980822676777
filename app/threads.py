"""Blocking work (decoding, resampling) in a worker thread that a cancelled request waits for.

A thread cannot be stopped. When a request is cancelled (its client went away) while a thread
still reads a decoder, the request must not go on to close that decoder or its file: libsndfile
crashes the process (segfault) when `sf_close` runs under a concurrent `sf_readf`. So a cancelled
caller first waits for the thread (at most one decode step), then sees its CancelledError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


async def run_to_completion(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in the thread pool; cancellation is delivered only once the thread has finished."""
    work = asyncio.ensure_future(run_in_threadpool(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                continue  # cancelled again: still wait, the thread holds the decoder
            except Exception:  # noqa: BLE001 - its outcome no longer matters, only that it ended
                break
        raise
