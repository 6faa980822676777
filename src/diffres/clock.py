"""The one clock: every speed figure (bench, load test, comparison) is timed here.

Interleaved timing: compared callables run in the same loop, so drift (thermal, a neighbour's
job) lands on all of them, and ratios are taken per round before the median.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def summary(values: list[float]) -> dict[str, float]:
    """Median with quartiles and extremes: the spread says how noisy the machine was."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "p25": q[0], "p75": q[2],
            "min": min(values), "max": max(values), "n": len(values)}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3,
                sample_s: float = 0.15) -> dict[str, list[float]]:
    """Seconds per call of each fn, `repeats` samples each, taken round-robin.

    A sample is the mean of back-to-back calls until `sample_s` has passed (at least one call): one
    8 ms call is mostly timer and scheduler noise, and a time budget (not a call count fixed up
    front) keeps a sample short when the machine slows down mid-run. The starting fn rotates every
    round so none always runs first.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn, calls = fns[name], 0
                t0 = time.perf_counter()
                while True:
                    fn()
                    calls += 1
                    elapsed = time.perf_counter() - t0
                    if elapsed >= sample_s:
                        break
                times[name].append(elapsed / calls)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def paired_ratio(num: list[float], den: list[float]) -> dict[str, float]:
    """Summary of per-round num/den: both were timed in the same round, under the same load."""
    return summary([a / b for a, b in zip(num, den)])


def rates(times: dict[str, list[float]], work: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per-second rates (e.g. audio-seconds per second) from seconds per call and the work one call does."""
    return {name: summary([work[name] / t for t in ts]) for name, ts in times.items()}
