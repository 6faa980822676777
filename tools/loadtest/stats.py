"""Throughput and latency of the steady-state part of a run, from per-request records.

Computed from our own records rather than locust's stats: exact percentiles (locust rounds them
into buckets), audio seconds per second (locust does not know what a request carried) and a
steady-state window that leaves the ramp-up out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

Record = tuple[float, float, str, bool, int, float]  # start, end, kind, ok, status, audio seconds


def _latency(ms: Sequence[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(ms)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1),
            "mean": round(float(a.mean()), 1), "max": round(float(a.max()), 1)}


def _block(recs: list[Record], elapsed: float) -> dict[str, Any]:
    ok = [r for r in recs if r[3]]
    audio = sum(r[5] for r in ok)
    return {
        "requests": len(recs),
        "failures": len(recs) - len(ok),
        "requests_per_s": round(len(recs) / elapsed, 2) if elapsed > 0 else None,
        "audio_seconds": round(audio, 1),
        "audio_s_per_s": round(audio / elapsed, 2) if elapsed > 0 else None,
        "latency_ms": _latency([(r[1] - r[0]) * 1000 for r in ok]),
    }


def summarize(windows: Sequence[tuple[Sequence[Sequence[Any]], float]], source: str) -> dict[str, Any]:
    """Rates and latencies over one or more load windows, each (records, steady-state start).

    Only requests that started at or after their window's start count; a window lasts from that
    start to its last answer, and rates divide by the windows' summed length.
    """
    recs: list[Record] = []
    elapsed, excluded = 0.0, 0
    for records, start in windows:
        steady: list[Record] = [(float(r[0]), float(r[1]), str(r[2]), bool(r[3]), int(r[4]), float(r[5]))
                                for r in records if r[0] >= start]  # JSON gives lists
        excluded += len(records) - len(steady)
        if steady:
            elapsed += max(r[1] for r in steady) - start
        recs.extend(steady)
    out = {"clip_source": source, "windows": len(windows), "window_s": round(elapsed, 2),
           "total": _block(recs, elapsed),
           "statuses": {str(k): v for k, v in sorted(Counter(r[4] for r in recs).items())},
           "warmup_requests_excluded": excluded}
    for kind in sorted({r[2] for r in recs}):
        out[kind] = _block([r for r in recs if r[2] == kind], elapsed)
    return out
