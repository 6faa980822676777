"""End to end: `diffres serve` as a real uvicorn process on 127.0.0.1 and a free port.

Every process is bounded by timeouts and always killed, whatever the test outcome.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    MODEL_DIR,
    REPO_ROOT,
    metric_value,
    require_clips,
    require_model,
    wav,
)

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def logs(self) -> list[dict]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def start_server(tmp_path: Path, **env: str) -> Server:
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    environment = {**os.environ, "DIFFRES_HOST": "127.0.0.1", "DIFFRES_PORT": str(port),
                   "DIFFRES_MODEL_DIR": str(MODEL_DIR), **env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "diffres", "serve"], cwd=REPO_ROOT, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if client.get(server.url + "/readyz").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling the readiness probe; nothing else to wait on across processes
    stop(server)
    raise AssertionError(f"server not ready within {START_TIMEOUT_S} s:\n{log_path.read_text()}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_model("keywords")
    s = start_server(tmp_path_factory.mktemp("e2e"))
    try:
        yield s
    finally:
        stop(s)


def test_probes_models_and_docs(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        assert "keywords" in [m["name"] for m in c.get("/v1/models").json()["models"]]
        assert c.get("/docs").status_code == 200
        assert c.get("/v2/health/live").status_code == 200


def test_classify_over_http_with_request_id_and_json_access_log(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/classify?top_k=3", files={"file": ("tone.wav", wav(2.0), "audio/wav")},
                   headers={"X-Request-ID": "e2e-42"})
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "e2e-42" and len(r.json()["predictions"]) == 3
        bad = c.post("/v1/classify", content=b"garbage", headers={"content-type": "audio/wav"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_audio"
        metrics = c.get("/metrics").text
    assert metric_value(metrics, "diffres_http_requests_total", route="/v1/classify", status="200") >= 1
    deadline = time.monotonic() + 10  # the access line is written just after the response
    while time.monotonic() < deadline:
        access = [e for e in server.logs()
                  if e.get("logger") == "diffres.server.access" and e.get("request_id") == "e2e-42"]
        if access:
            break
        time.sleep(0.05)
    assert access and access[0]["status"] == 200 and access[0]["route"] == "/v1/classify"


def test_real_clip_and_oip_infer_over_http(server: Server) -> None:
    [clip] = require_clips("keywords", "computer", "*.flac", 1)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/classify", content=clip.read_bytes(), headers={"content-type": "audio/flac"})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "computer"
        v2 = c.post("/v2/models/keywords/infer", json={"inputs": [
            {"name": "waveform", "shape": [1, 1600], "datatype": "FP32", "data": [0.0] * 1600}]})
        labels = c.get("/v1/models").json()["models"]
        n = len(next(m for m in labels if m["name"] == "keywords")["labels"])
        assert v2.status_code == 200 and v2.json()["outputs"][0]["shape"] == [1, n]


def test_upload_over_the_limit_is_refused_over_a_real_socket(tmp_path: Path) -> None:
    require_model("keywords")
    s = start_server(tmp_path, DIFFRES_MAX_UPLOAD_BYTES="1000000")
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            declared = c.post("/v1/classify", content=wav(60.0), headers={"content-type": "audio/wav"})
            streamed = c.post("/v1/classify", content=iter([b"\0" * 65536] * 40), headers={"content-type": "audio/wav"})
            assert c.get("/healthz").status_code == 200
    finally:
        stop(s)
    for r in (declared, streamed):
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_sigterm_finishes_the_request_in_flight(tmp_path: Path) -> None:
    """SIGTERM while a request is mid-upload: it still gets its 200, then the process exits cleanly."""
    require_model("keywords")
    s = start_server(tmp_path)
    try:
        data = wav(12.0)
        half_sent, release = threading.Event(), threading.Event()
        result: dict[str, httpx.Response | BaseException] = {}

        def body() -> Iterator[bytes]:
            yield data[: len(data) // 2]
            half_sent.set()
            assert release.wait(30)
            yield data[len(data) // 2:]

        def client() -> None:
            try:
                with httpx.Client(timeout=60) as c:
                    result["r"] = c.post(s.url + "/v1/classify", content=body(), headers={"content-type": "audio/wav"})
            except BaseException as exc:  # recorded for the assertion below
                result["r"] = exc

        worker = threading.Thread(target=client, daemon=True)
        worker.start()
        assert half_sent.wait(30)
        with httpx.Client(timeout=5) as c:  # the server has the request when the in-progress gauge says so
            deadline = time.monotonic() + 30
            while metric_value(c.get(s.url + "/metrics").text, "diffres_http_requests_in_progress") < 1:
                assert time.monotonic() < deadline, "request never reached the app"
                time.sleep(0.02)
        s.process.send_signal(signal.SIGTERM)
        release.set()
        worker.join(60)
        # uvicorn re-raises the signal after its graceful shutdown, so "clean" reads as killed-by-SIGTERM.
        assert s.process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        release.set()
        stop(s)
    response = result.get("r")
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200 and response.json()["windowing"]["windows"] >= 1
    messages = [e.get("message", "") for e in s.logs()]
    assert any("batchers drained" in m for m in messages)


def test_one_ready_line_after_the_models_are_warm(server: Server) -> None:
    """People read the start-up: the models load, then one line says the service is ready and where."""
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    ready = [i for i, m in enumerate(messages) if m.startswith("ready: ")]
    loaded = [i for i, m in enumerate(messages) if " loaded: " in m]
    assert len(ready) == 1 and loaded and max(loaded) < ready[0]
    assert re.fullmatch(r"ready: \d+ models \(.*keywords.*\), demo at http://127\.0\.0\.1:\d+/", messages[ready[0]])


def test_text_logs_in_a_terminal_json_elsewhere(tmp_path: Path) -> None:
    """DIFFRES_LOG_FORMAT=text gives lines for people (a terminal's default); the server above wrote JSON."""
    text_server = start_server(tmp_path, DIFFRES_LOG_FORMAT="text", DIFFRES_WARMUP="false")
    try:
        with httpx.Client(base_url=text_server.url, timeout=30) as c:
            c.get("/v1/models")
    finally:
        stop(text_server)
    log = text_server.log_path.read_text()
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} INFO  ready: \d+ models", log, re.M), log[-2000:]
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} INFO  GET /v1/models 200 \(\d+\.\d ms\) \[\w{8}\]", log, re.M)
