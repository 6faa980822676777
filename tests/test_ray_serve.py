"""The service on Ray Serve, end to end: `python -m diffres.server.ray_main` (what `make serve-ray` runs), 2 replicas.

One small local Ray for the whole module (about a minute in all on 2 cores); skipped, with the
reason printed, when Ray itself cannot start here. Every /v1 and /v2 route must answer through
Ray's proxy exactly as the plain uvicorn service does; Ray's metrics endpoint must show both
replicas with their frame counts; killing a replica's process under load costs only the requests in
flight on it (a JSON 503) and Ray replaces it; SIGTERM stops Serve and Ray and leaves no process.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from diffres.cpu import available_cpus
from tests.conftest import DATA_DIR, MODEL_DIR, REPO_ROOT, require_model, tone, wav
from tools.loadtest.ray_server import RayCannotStart, RayServer, kill_session
from tools.loadtest.server import Server

pytest.importorskip("ray.serve", reason="Ray is not installed (pip install -e '.[ray]')")

START_TIMEOUT_S = 240
UPLOAD_LIMIT = 1024 * 1024
ENV = {"DIFFRES_MODEL_DIR": str(MODEL_DIR), "DIFFRES_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
       "DIFFRES_DEFAULT_MODEL": "digits"}


@pytest.fixture(scope="module")
def ray_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServer]:
    require_model("digits")
    env = {**ENV, "RAY_DEDUP_LOGS": "0"}  # every replica's log line reaches the launcher's output
    server = RayServer(env, tmp_path_factory.mktemp("ray") / "launcher.log", replicas=2, ready_timeout=START_TIMEOUT_S)
    try:
        with server:
            yield server
    except RayCannotStart as exc:
        print(f"Ray could not start here:\n{exc}")
        pytest.skip(f"Ray could not start a local cluster on this machine: {str(exc)[-300:]}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(ENV, tmp_path_factory.mktemp("plain") / "server.log", ready_timeout=120, cwd=REPO_ROOT) as server:
        yield server


# ------------------------------------------------------------------ same answers as uvicorn

def digit_clip() -> bytes:
    clips = sorted((DATA_DIR / "digits" / "4").glob("4_*_3.wav"))
    return clips[0].read_bytes() if clips else wav(0.6, 8000)


def infer_body() -> dict[str, Any]:
    rows = [tone(0.5, 8000, freq=500.0), tone(0.3, 8000, freq=1500.0)]
    padded = np.zeros((2, len(rows[0])), dtype=np.float32)
    for i, r in enumerate(rows):
        padded[i, :len(r)] = r
    return {"inputs": [{"name": "waveform", "shape": list(padded.shape), "datatype": "FP32",
                        "data": padded.reshape(-1).tolist()},
                       {"name": "lengths", "shape": [2], "datatype": "INT64", "data": [len(r) for r in rows]}],
            "outputs": [{"name": "logits"}, {"name": "frames_in"}, {"name": "frames_out"}]}


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/healthz", {}), ("GET", "/readyz", {}), ("GET", "/v1/models", {}), ("GET", "/v2", {}),
    ("GET", "/v2/health/live", {}), ("GET", "/v2/health/ready", {}), ("GET", "/v2/models/digits", {}),
    ("GET", "/v2/models/digits/ready", {}), ("GET", "/v2/models/nope", {}), ("GET", "/nope", {}),
    ("GET", "/v2/models/digits/versions/1", {}), ("GET", "/v2/models/digits/versions/2/ready", {}),
    ("POST", "/v2/repository/index", {}),
    ("POST", "/v1/classify?model=digits&top_k=3", {"content": digit_clip(), "headers": {"Content-Type": "audio/wav"}}),
    ("POST", "/v1/classify?top_k=2", {"files": {"file": ("d.wav", digit_clip(), "audio/wav")}}),
    ("POST", "/v1/classify/batch?model=digits&top_k=1",
     {"files": [("file", ("a.wav", digit_clip(), "audio/wav")), ("file", ("b.wav", wav(0.4, 8000), "audio/wav")),
                ("file", ("readme.md", b"# not audio", "text/markdown"))]}),
    ("POST", "/v1/classify", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}),
    ("POST", "/v1/classify", {"content": b"not audio at all", "headers": {"Content-Type": "audio/wav"}}),
    ("POST", "/v1/classify?model=nope", {"content": digit_clip(), "headers": {"Content-Type": "audio/wav"}}),
    ("POST", "/v1/classify?top_k=0", {"content": digit_clip(), "headers": {"Content-Type": "audio/wav"}}),
    ("POST", "/v1/classify", {"content": b"", "headers": {"Content-Type": "audio/wav"}}),
    ("POST", "/v1/classify", {"content": b"\0" * (2 * UPLOAD_LIMIT),
                              "headers": {"Content-Type": "application/octet-stream"}}),
    ("POST", "/v2/models/digits/infer", {"json": infer_body()}),
    ("POST", "/v2/models/digits/infer", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
]


def comparable(value: Any) -> Any:
    """The body without timings (they differ run to run), floats rounded past float noise."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k != "timing_ms"}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


@pytest.mark.parametrize("method,path,kwargs", REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_route_answers_through_ray_as_through_uvicorn(ray_service: RayServer, plain: Server, method: str,
                                                      path: str, kwargs: dict[str, Any]) -> None:
    answers = []
    for base in (plain.url, ray_service.url):
        r = httpx.request(method, base + path, timeout=60, headers={"X-Request-ID": "ray-parity-1",
                                                                     **kwargs.get("headers", {})},
                          **{k: v for k, v in kwargs.items() if k != "headers"})
        assert r.headers.get("x-request-id") == "ray-parity-1"
        is_json = r.headers.get("content-type", "").startswith("application/json")
        answers.append((r.status_code, r.headers.get("content-type"), comparable(r.json()) if is_json else None))
    assert answers[1] == answers[0]


def test_repository_changes_go_through_rays_rolling_update_not_the_api(ray_service: RayServer) -> None:
    """A load or unload call would reach one replica only: refused, pointing at user_config (docs/repository.md)."""
    for action in ("load", "unload"):
        r = httpx.post(f"{ray_service.url}/v2/repository/models/digits/{action}", timeout=60)
        assert r.status_code == 403 and "models_generation" in r.json()["error"]


def test_metrics_route_answers_prometheus_text(ray_service: RayServer) -> None:
    r = httpx.get(ray_service.url + "/metrics", timeout=30)
    assert r.status_code == 200 and "diffres_frames_in_total" in r.text  # one replica's own registry


def _open_chunked_upload(url: str, total: int) -> socket.socket:
    """A chunked upload of `total` bytes whose terminating chunk is never sent (the body stays open)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"\0" * 65536
    for _ in range(total // len(chunk)):
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    return sock


def _read_response(sock: socket.socket) -> tuple[str, dict[str, Any]]:
    """Status line and JSON body of one HTTP/1.1 response (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without a response: {data[:200]!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n", 1)[0].decode(), json.loads(body[:length])


def test_oversized_streamed_body_gets_413_before_it_ends(ray_service: RayServer, plain: Server) -> None:
    """Ray's proxy streams the body to the replica (it does not buffer it first): the limit fires mid-body."""
    answers = []
    for base in (plain.url, ray_service.url):
        with _open_chunked_upload(base, 2 * UPLOAD_LIMIT) as sock:
            answers.append(_read_response(sock))
    assert answers[0][0].startswith("HTTP/1.1 413") and answers[0][1]["error"]["code"] == "payload_too_large"
    assert answers[1] == answers[0]


def stream_exchange(url: str, pcm: bytes) -> tuple[list[Any], int | None]:
    """Everything /v1/stream says to `pcm` in 100 ms chunks (8 kHz s16le), and its close code."""
    messages: list[Any] = []
    with ws_connect(url.replace("http://", "ws://") + "/v1/stream?model=digits", open_timeout=30) as ws:
        messages.append(json.loads(ws.recv(timeout=30)))
        for i in range(0, len(pcm), 1600):
            ws.send(pcm[i:i + 1600])
        ws.send(json.dumps({"type": "end"}))
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=30)))
        except ConnectionClosed as closed:
            return messages, closed.rcvd.code if closed.rcvd else None


def test_websocket_stream_answers_through_ray_as_through_uvicorn(ray_service: RayServer, plain: Server) -> None:
    x = np.concatenate([np.zeros(4000, np.float32), tone(0.5, 8000, freq=700.0), np.zeros(8000, np.float32)])
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    answers = [stream_exchange(base, pcm) for base in (plain.url, ray_service.url)]
    assert answers[0][1] == 1000 and answers[0][0][-1]["type"] == "end"
    for plain_message, ray_message in zip(comparable(answers[0][0]), comparable(answers[1][0]), strict=True):
        assert ray_message == plain_message


# ------------------------------------------------------------------ replicas, metrics, threads

def ray_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m:
            out.append((dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))), float(m.group(2))))
    return out


def test_both_replicas_report_their_metrics_to_ray(ray_service: RayServer) -> None:
    for _ in range(6):
        assert httpx.post(ray_service.url + "/v1/classify?model=digits", content=digit_clip(), timeout=60,
                          headers={"Content-Type": "audio/wav"}).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(ray_service.metrics_url, timeout=10).text
        ready = {labels["replica"] for labels, v in ray_samples(text, "ray_diffres_ready") if v == 1}
        frames_in = sum(v for labels, v in ray_samples(text, "ray_diffres_frames_in_total")
                        if labels.get("model") == "digits")
        frames_out = sum(v for labels, v in ray_samples(text, "ray_diffres_frames_out_total")
                         if labels.get("model") == "digits")
        if len(ready) == 2 and frames_in > 0 and frames_out > 0:
            break
        assert time.monotonic() < deadline, f"Ray's metrics lack replicas or frames: ready={ready}, in={frames_in}"
        time.sleep(2)
    assert 0 < frames_out < frames_in  # DiffRes removed frames


def test_each_replica_runs_its_share_of_the_cpus(ray_service: RayServer) -> None:
    """2 replicas: each is sized to half the CPUs, and runs that many single-threaded calls at once."""
    share = max(1, available_cpus() // 2)
    built = re.findall(r"replica app built: onnxruntime on (\d+) CPU", ray_service.log())
    assert len(built) >= 2 and set(built) == {str(share)}, built
    layouts = re.findall(r"(\d+) call\(s\) at once of (\d+) thread\(s\)", ray_service.log())
    assert len(layouts) >= 2 and set(layouts) == {(str(share), "1")}, layouts


# ------------------------------------------------------------------ shutdown (last: it stops the service)

def test_sigterm_stops_serve_and_ray_and_leaves_no_process(ray_service: RayServer) -> None:
    ray_service.stop()
    assert ray_service.proc is not None and ray_service.proc.returncode == 143
    assert ray_service.stop_seconds is not None and ray_service.stop_seconds < 60
    assert "stopped: Serve and Ray shut down" in ray_service.log()
    assert ray_service.leftovers == [], "Ray left processes behind"


def test_killing_a_replica_under_load_costs_only_its_requests(tmp_path: Path) -> None:
    """The fault script starts its own Ray (after the module's is stopped: one Ray at a time on 2 cores)."""
    require_model("digits")
    cmd = [sys.executable, "-m", "tools.loadtest.ray_fault", "--clients", "4", "--max-seconds", "60",
           "--recovery-bound", "60", "--out", str(tmp_path)]
    log_path = tmp_path / "fault.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        returncode = process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_session(process.pid)
    if returncode == 3:
        pytest.skip(f"Ray could not start a local cluster: {log_path.read_text(errors='replace')[-300:]}")
    assert (tmp_path / "ray_fault.json").exists(), log_path.read_text(errors="replace")[-4000:]
    report = json.loads((tmp_path / "ray_fault.json").read_text())
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}))
    assert returncode == 0, report["verdict"]
    assert report["failed"] <= 4 and set(report["failed_by_status"]) <= {"503"}
    assert report["recovery_s"] is not None and report["failed_after_recovery"] == 0
    assert report["requests_after_recovery"] > 0
