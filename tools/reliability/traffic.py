"""Traffic at the load test's mix (tools/loadtest/locustfile.py: 90% 1-5 s clips, 10% 10-30 s): a soak with
resources sampled every minute, and overload at 4x the soak's clients."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tools.loadtest import clips as cliplib
from tools.loadtest.__main__ import run_locust
from tools.loadtest.stats import summarize
from tools.reliability import audio
from tools.reliability.probe import Service


def clip_set(work: Path) -> Path:
    folder = work / "clips"
    if not (folder / cliplib.MANIFEST).exists():
        cliplib.build(folder, audio.DATA if audio.DATA.is_dir() else None, audio.SR)
    return folder


def _locust(s: Service, work: Path, users: int, seconds: int) -> dict[str, Any]:
    args = argparse.Namespace(users=users, spawn_rate=users, long_fraction=0.1, model="keywords", raw=False)
    data = run_locust(args, s.url, clip_set(work), work, seconds)
    return summarize([(data["records"], data["start"])], data["source"])


def soak(work: Path, minutes: float, clients: int, ceiling_mb: float) -> dict[str, Any]:
    """`clients` closed-loop users for `minutes`; RSS, fds and temp files sampled every 10 s, reported per minute."""
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    with Service(work, "soak") as s:
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.wait(10):
                samples.append({"t_min": round((time.monotonic() - t0) / 60, 2), "rss_mb": s.rss_mb() or 0.0,
                                "fds": s.fds() or 0, "temp_files": s.temp_files()})

        sampler = threading.Thread(target=sample, daemon=True)
        start_rss = s.rss_mb()
        sampler.start()
        try:
            stats = _locust(s, work, clients, round(minutes * 60))
        finally:
            stop.set()
            sampler.join(15)
        time.sleep(5)
        after = {"rss_mb": s.rss_mb(), "fds": s.fds(), "temp_files": s.temp_files()}
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        rows = [x for x in samples if m <= x["t_min"] < m + 1]
        if rows:
            per_minute.append({"minute": m + 1, "rss_mb_max": max(r["rss_mb"] for r in rows),
                               "fds_max": max(r["fds"] for r in rows),
                               "temp_files_max": max(r["temp_files"] for r in rows)})
    peak = max([r["rss_mb"] for r in samples] + [start_rss or 0.0])
    total = stats["total"]
    passed = total["failures"] == 0 and total["requests"] > 0 and peak < ceiling_mb and after["temp_files"] == 0
    return {"passed": passed, "minutes": minutes, "clients": clients, "requests": total["requests"],
            "failures": total["failures"], "statuses": stats["statuses"], "requests_per_s": total["requests_per_s"],
            "latency_ms": total["latency_ms"], "by_kind": {k: v for k, v in stats.items() if k in ("short", "long")},
            "rss_start_mb": start_rss, "rss_peak_mb": peak, "after": after, "per_minute": per_minute,
            "clip_source": stats["clip_source"]}


def overload(work: Path, clients: int, seconds: int) -> dict[str, Any]:
    """`clients` closed-loop users (4x the soak) plus a probe that reads each answer's headers:
    refusals are 503 with Retry-After and come at once; accepted requests' p99 is reported."""
    probes: list[tuple[int, float, str]] = []
    stop = threading.Event()
    clips = audio.short_clips(16, seed=3)
    with Service(work, "overload") as s:
        def probe() -> None:
            with httpx.Client(timeout=120) as client:
                i = 0
                while not stop.is_set():
                    t = time.monotonic()
                    r = client.post(s.url + "/v1/classify", content=clips[i % len(clips)],
                                    headers={"content-type": "audio/flac"})
                    probes.append((r.status_code, time.monotonic() - t, r.headers.get("retry-after", "")))
                    i += 1

        threads = [threading.Thread(target=probe, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            stats = _locust(s, work, clients, seconds)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
    refused = [p for p in probes if p[0] == 503]
    statuses = stats["statuses"]
    five_xx_other = sum(v for k, v in statuses.items() if k.startswith("5") and k != "503")
    refusal_p99 = round(float(np.percentile([p[1] for p in refused], 99)) * 1000, 1) if refused else None
    passed = (five_xx_other == 0 and set(statuses) <= {"200", "503"} and all(p[2] for p in refused)
              and (refusal_p99 is None or refusal_p99 < 500))
    return {"passed": passed, "clients": clients, "seconds": seconds, "statuses": statuses,
            "accepted_latency_ms": stats["total"]["latency_ms"], "requests_per_s": stats["total"]["requests_per_s"],
            "probe_requests": len(probes), "probe_503": len(refused),
            "probe_503_with_retry_after": sum(1 for p in refused if p[2]), "refusal_p99_ms": refusal_p99}
