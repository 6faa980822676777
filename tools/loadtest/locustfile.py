"""Locust users posting a realistic clip mix to POST /v1/classify as fast as answers come back.

Closed loop (no think time): N users = N requests in flight, which is what measures throughput.
Run by `python -m tools.loadtest`, which passes the clip folder and where to write a summary through
the environment; it also works alone against a running service:

    locust -f tools/loadtest/locustfile.py --headless -u 16 -r 16 --run-time 60s --host http://127.0.0.1:8000

Environment: LOADTEST_CLIPS (folder from loadtest.clips.build; default: built on the fly),
LOADTEST_LONG_FRACTION (0.1), LOADTEST_MODEL (model query parameter), LOADTEST_RAW=1 (raw body
instead of multipart), LOADTEST_RECORDS (JSON written at exit: per-request records and the
steady-state start; loadtest.stats.summarize turns them into rates and percentiles).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # locust puts only this file's folder on sys.path
    sys.path.insert(0, str(ROOT))

from tools.loadtest.clips import Clip, Mix, build, load  # noqa: E402

CLIP_DIR = Path(os.environ.get("LOADTEST_CLIPS") or ROOT / "reports" / "tmp" / "loadtest" / "clips")
LONG_FRACTION = float(os.environ.get("LOADTEST_LONG_FRACTION", "0.1"))
MODEL = os.environ.get("LOADTEST_MODEL") or None
RAW = os.environ.get("LOADTEST_RAW") == "1"
RECORDS = os.environ.get("LOADTEST_RECORDS")

if not (CLIP_DIR / "manifest.json").exists():
    build(CLIP_DIR, ROOT.parent / "shared" / "data" / "keywords", 16000)
SOURCE, CLIPS = load(CLIP_DIR)


def _payload(clip: Clip) -> tuple[bytes, dict[str, str]]:
    """Request body and headers, built once per clip so the client spends no CPU on it per request."""
    data = (CLIP_DIR / clip.file).read_bytes()
    if RAW:
        kind = "flac" if clip.file.endswith(".flac") else "wav"
        return data, {"Content-Type": f"audio/{kind}"}
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


PAYLOADS = {c.name: _payload(c) for c in CLIPS}
QUERY = "/v1/classify?top_k=5" + (f"&model={MODEL}" if MODEL else "")

# (start, end, kind, ok, status, audio seconds from the answer); written at exit.
records: list[tuple[float, float, str, bool, int, float]] = []
measure_from: list[float] = []


@events.spawning_complete.add_listener
def _all_spawned(user_count: int, **_: Any) -> None:
    """Steady state starts when every user runs: the ramp-up is left out of the numbers."""
    if not measure_from:
        measure_from.append(time.time())


@events.quitting.add_listener
def _write_records(environment: Any, **_: Any) -> None:
    """Raw records plus the steady-state start: the caller computes rates and exact percentiles."""
    if not RECORDS:
        return
    start = measure_from[0] if measure_from else (records[0][0] if records else time.time())
    Path(RECORDS).write_text(json.dumps({"source": SOURCE, "start": start, "records": records}))


class ClassifyUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 120.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.mix = Mix(CLIPS, LONG_FRACTION, seed=None)

    @task
    def classify(self) -> None:
        clip = self.mix.next()
        body, headers = PAYLOADS[clip.name]
        start = time.time()
        # bytes bodies work (geventhttpclient sends them as they are); the annotation says str | dict.
        with self.client.post(QUERY, data=body, headers=headers, name=clip.kind,  # type: ignore[arg-type]
                              catch_response=True) as r:
            ok, audio_s = False, 0.0
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
            else:
                try:
                    answer = r.json()
                except ValueError:
                    answer = {}
                if answer.get("predictions") and answer.get("frames"):
                    ok, audio_s = True, float(answer.get("duration_s") or clip.seconds)
                else:
                    r.failure("answer lacks predictions or frames")
        records.append((start, time.time(), clip.kind, ok, r.status_code or 0, audio_s))
