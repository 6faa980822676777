"""The process's life: SIGTERM with requests in flight, kill -9 and restart, a corrupt model beside a good one."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from diffres.models import MODELS_DIR
from tools.reliability import audio
from tools.reliability.probe import ROOT, Service

FLAC = {"content-type": "audio/flac"}


def sigterm_in_flight(work: Path, clients: int = 8, slow: int = 4, grace_s: int = 5) -> dict[str, Any]:
    """SIGTERM while `clients` post short clips in a loop and `slow` 2-hour silent files run: short requests
    in flight finish (200) and new connections are refused; the slow ones are cut at the end of the grace
    period with a JSON 503 and Retry-After; the process exits as uvicorn does after a signal."""
    slow_body, clips = audio.silent_flac(7200), audio.short_clips(16)
    answers: list[tuple[str, int | str, str, str]] = []
    stop = threading.Event()

    def post(kind: str, body: bytes) -> None:
        try:
            r = httpx.post(s.url + "/v1/classify", content=body, headers=FLAC, timeout=120)
            answers.append((kind, r.status_code, r.headers.get("content-type", ""), r.headers.get("retry-after", "")))
        except httpx.HTTPError as exc:
            answers.append((kind, type(exc).__name__, "", ""))

    def loop(k: int) -> None:
        while not stop.is_set():
            post("short", clips[k % len(clips)])
            if answers and answers[-1][0] == "short" and isinstance(answers[-1][1], str):
                return  # refused: the listener is closed

    with Service(work, "sigterm", {"DIFFRES_SHUTDOWN_TIMEOUT_S": str(grace_s)}) as s:
        threads = [threading.Thread(target=post, args=("slow", slow_body)) for _ in range(slow)]
        threads += [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        time.sleep(4.0)  # every slow upload sent and running (they take tens of seconds), even on a busy machine
        assert s.proc is not None
        t0 = time.monotonic()
        os.killpg(s.proc.pid, signal.SIGTERM)
        code = s.proc.wait(timeout=grace_s + 60)
        exit_s = round(time.monotonic() - t0, 1)
        stop.set()
        for t in threads:
            t.join(30)
    short = [st for k, st, *_ in answers if k == "short"]
    short_5xx = sum(1 for st in short if isinstance(st, int) and st >= 500)
    slow_503 = sum(1 for k, st, ct, ra in answers if k == "slow" and st == 503 and ct.startswith("application/json")
                   and ra)
    refused = sum(1 for st in short if isinstance(st, str))
    passed = short_5xx == 0 and slow_503 == slow and refused > 0 and code in (0, -signal.SIGTERM)
    return {"passed": passed, "grace_s": grace_s, "short_answered_200": short.count(200), "short_5xx": short_5xx,
            "short_refused_after_close": refused, "slow_cut_json_503_retry_after": f"{slow_503}/{slow}",
            "exit_code": code, "exit_after_s": exit_s}


def kill9_restart(work: Path) -> dict[str, Any]:
    """kill -9 under load, then a new process on the same port: time until /readyz says ready again."""
    with Service(work, "kill9") as s:
        port = s.port
        body = audio.silent_flac(600)
        threading.Thread(target=lambda: _swallow(lambda: httpx.post(s.url + "/v1/classify", content=body,
                                                                    headers=FLAC, timeout=60)), daemon=True).start()
        time.sleep(1.0)
        assert s.proc is not None
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(10)
        leftovers = s.temp_files()
    restart = Service(work, "kill9-restart")
    restart.port, restart.url = port, f"http://127.0.0.1:{port}"
    restart.env["DIFFRES_PORT"] = str(port)
    t0 = time.monotonic()
    with restart:
        ready_s = round(time.monotonic() - t0, 2)
        ok = httpx.post(restart.url + "/v1/classify", content=audio.short_clips(1)[0], headers=FLAC, timeout=60)
    passed = ok.status_code == 200 and leftovers == 0
    return {"passed": passed, "ready_again_s": ready_s, "same_port": True, "temp_files_left_by_killed": leftovers,
            "first_request_after": ok.status_code}


def corrupt_model(work: Path) -> dict[str, Any]:
    """A truncated digits.onnx beside a good keywords.onnx: readiness says degraded (503), without paths;
    keywords still serves, digits is 404."""
    folder = work / "models-corrupt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(MODELS_DIR / "keywords.onnx", folder / "keywords.onnx")
    data = (MODELS_DIR / "digits.onnx").read_bytes()
    (folder / "digits.onnx").write_bytes(data[:len(data) // 3])
    s = Service(work, "corrupt", {"DIFFRES_MODEL_DIR": str(folder)})
    with s:
        ready = httpx.get(s.url + "/readyz", timeout=5)
        v2 = httpx.get(s.url + "/v2/health/ready", timeout=5)
        good = httpx.post(s.url + "/v1/classify", content=audio.short_clips(1)[0], headers=FLAC, timeout=60)
        bad = httpx.post(s.url + "/v1/classify?model=digits", content=audio.short_clips(1)[0], headers=FLAC,
                         timeout=60)
    message = ready.json().get("error", {}).get("message", "")
    no_paths = str(folder) not in ready.text and str(ROOT) not in ready.text
    passed = (ready.status_code == 503 and "degraded" in message and no_paths and v2.status_code == 503
              and good.status_code == 200 and bad.status_code == 404)
    return {"passed": passed, "readyz": ready.status_code, "readyz_message": message[:300],
            "no_paths_in_probe": no_paths, "v2_ready": v2.status_code, "good_model": good.status_code,
            "corrupt_model": bad.status_code}


def _swallow(fn: Any) -> None:
    try:
        fn()
    except Exception:  # the server is killed under this request on purpose
        pass
