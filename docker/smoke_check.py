"""Smoke check of a running service, stdlib only (runs on the host, whatever its Python packages).

`python3 docker/smoke_check.py http://127.0.0.1:PORT [clip]` waits for /readyz (bounded), posts
one clip as multipart field `file` and checks the answer: predictions non-empty, frames present.
Without a clip it posts a generated 1.5 s WAV. Exit status 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
import wave
from pathlib import Path


def generated_wav(seconds: float = 1.5, rate: int = 16000) -> bytes:
    """A chirp plus a little noise: decodable audio of a realistic length when no data is around."""
    rng = random.Random(0)
    n = int(seconds * rate)
    samples = (0.3 * math.sin(2 * math.pi * (200 + 600 * i / n) * i / rate) + 0.02 * rng.uniform(-1, 1)
               for i in range(n))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(s * 32767)) for s in samples))
    return buf.getvalue()


def wait_ready(base: str, timeout_s: float) -> None:
    """Poll /readyz until 200; the service answers 503 while models load."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                print(f"ready: {r.read().decode()}")
                return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:200]}"
        except OSError as exc:
            last = str(exc)
        time.sleep(1)
    raise SystemExit(f"not ready after {timeout_s:.0f} s (last: {last})")


def classify(base: str, name: str, data: bytes) -> dict:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{base}/v1/classify?top_k=3", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"classify failed: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="http://127.0.0.1:PORT")
    p.add_argument("clip", nargs="?", type=Path, help="audio file to post (default: a generated WAV)")
    p.add_argument("--ready-timeout", type=float, default=120)
    args = p.parse_args()

    wait_ready(args.base, args.ready_timeout)
    name, data = (args.clip.name, args.clip.read_bytes()) if args.clip else ("generated.wav", generated_wav())
    answer = classify(args.base, name, data)
    print(json.dumps({k: answer.get(k) for k in ("model", "predictions", "frames", "duration_s", "timing_ms")}))
    problems = []
    preds = answer.get("predictions")
    if not preds or not all("label" in x and "score" in x for x in preds):
        problems.append("predictions missing or empty")
    if not answer.get("frames"):
        problems.append("frames missing")
    if problems or not preds:
        sys.exit("smoke check FAILED: " + "; ".join(problems))
    print(f"smoke check passed: {name} -> {preds[0]['label']} ({preds[0]['score']:.3f})")


if __name__ == "__main__":
    main()
