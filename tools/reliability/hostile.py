"""Hostile cases, each against its own server: what an attacker would try, with the figure that says it held.

Every case returns a dict with `passed` and its figures; traffic is bounded in count and time.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tools.reliability import audio
from tools.reliability.probe import Service

Result = dict[str, Any]
FLAC = {"content-type": "audio/flac"}
JSON = {"content-type": "application/json"}
# Short server timeouts so the slow-client cases finish in seconds; the defaults (10 s, 30 s) differ only in time.
FAST_TIMEOUTS = {"DIFFRES_HEADER_TIMEOUT_S": "3", "DIFFRES_BODY_TIMEOUT_S": "3"}


def p99(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)), 3) if values else None


def is_json_error(r: httpx.Response) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    return r.headers.get("content-type", "").startswith("application/json") and "error" in body


def healthy(s: Service) -> bool:
    try:
        return httpx.get(s.url + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def nested_json(s: Service) -> Result:
    """A 2 KB body nested 1000 deep (and one inside `data`): 400 in the OIP shape, never a 500."""
    bomb = ("[" * 1000 + "]" * 1000).encode()
    in_data = ('{"inputs": [{"name": "waveform", "shape": [1, 1], "datatype": "FP32", "data": '
               + "[" * 1000 + "0" + "]" * 1000 + "}]}").encode()
    out = {}
    for name, body in (("top level", bomb), ("inside data", in_data)):
        r = httpx.post(s.url + "/v2/models/keywords/infer", content=body, headers=JSON, timeout=30)
        out[name] = {"status": r.status_code, "oip_shape": isinstance(r.json().get("error"), str)}
    passed = all(v["status"] == 400 and v["oip_shape"] for v in out.values()) and healthy(s)
    return {"passed": passed, "cases": out}


def flac_unknown_length(s: Service, limit_s: float) -> Result:
    """A streamed FLAC (no length in its header) decodes; one over the limit is cut off while decoding (413)."""
    ok = httpx.post(s.url + "/v1/classify", content=audio.streamed_flac(2.0), headers=FLAC, timeout=60)
    over = httpx.post(s.url + "/v1/classify", content=audio.streamed_flac(limit_s + 5), headers=FLAC, timeout=60)
    passed = ok.status_code == 200 and over.status_code == 413 and "DIFFRES_MAX_DURATION_S" in over.text
    return {"passed": passed, "short_status": ok.status_code, "over_limit_status": over.status_code,
            "over_limit_message": over.json()["error"]["message"]}


def slowloris(s: Service, connections: int, timeout_s: float) -> Result:
    """`connections` clients dribbling a header line a second: each is closed at the header deadline
    (dribbling does not extend it), and other clients are still served meanwhile."""
    socks = [s.connect() for _ in range(connections)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    served_meanwhile = healthy(s)
    still_open, closed_after = set(socks), []
    while still_open and time.monotonic() < started + timeout_s + 10:
        for sock in list(still_open):
            try:
                sock.send(b"X-Slow: 1\r\n")
            except OSError:
                still_open.discard(sock)
                closed_after.append(time.monotonic() - started)
        readable, _, _ = select.select(list(still_open), [], [], 1.0)
        for sock in readable:  # the 408, or end of file: the server hung up
            still_open.discard(sock)
            closed_after.append(time.monotonic() - started)
    for sock in socks:
        sock.close()
    worst = round(max(closed_after), 2) if closed_after else None
    passed = not still_open and served_meanwhile and worst is not None and worst < timeout_s + 5 and healthy(s)
    return {"passed": passed, "connections": connections, "still_open": len(still_open), "closed_by_s": worst,
            "header_timeout_s": timeout_s, "served_during_attack": served_meanwhile}


def _half_open(s: Service) -> str:
    """Headers promising 100 kB, 10 bytes of body, then silence: what does the server do?"""
    try:
        with s.connect(timeout=20) as sock:
            sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                         b"Content-Length: 100000\r\n\r\n0123456789")
            head = sock.recv(64)
    except OSError as exc:
        return type(exc).__name__
    return head.split(b"\r\n")[0].decode(errors="replace")[9:12] or "closed"


def half_open(s: Service, requests: int, timeout_s: float) -> Result:
    """`requests` uploads that stall after 10 bytes: 408 at the body deadline (or 503 over the connection cap)."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(requests, 512)) as pool:
        outcomes = list(pool.map(lambda _: _half_open(s), range(requests)))
    counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    elapsed = round(time.monotonic() - started, 1)
    passed = set(counts) <= {"408", "503"} and healthy(s)
    return {"passed": passed, "requests": requests, "outcomes": counts, "elapsed_s": elapsed,
            "body_timeout_s": timeout_s}


def header_size(s: Service) -> Result:
    """64 KB of headers: 431 and closed, before the app sees anything."""
    with s.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
        sock.settimeout(10)
        head = sock.recv(4096)
    status = head[9:12].decode(errors="replace")
    return {"passed": status == "431" and healthy(s), "status": status}


def _post_long_then_leave(url: str, body: bytes, after_s: float) -> None:
    """Send a whole upload, wait `after_s`, hang up without reading the answer."""
    with socket.create_connection((url.split(":")[1][2:], int(url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/flac\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(after_s)


def _access_log(s: Service) -> list[dict[str, Any]]:
    lines = s.log_path.read_text(errors="replace").splitlines()
    return [e for e in (json.loads(x) for x in lines if x.startswith("{")) if e.get("logger") == "diffres.server.access"]


def disconnect_storm(s: Service, clients: int, minutes: float) -> Result:
    """`clients` post a long silent FLAC and hang up after 0.5 s: the work stops, and is logged as 499."""
    body = audio.silent_flac(minutes * 60)
    cpu0 = s.cpu_seconds() or 0.0
    threads = [threading.Thread(target=_post_long_then_leave, args=(s.url, body, 0.5)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    time.sleep(3)  # a window or two to notice and cancel
    cpu1 = s.cpu_seconds() or 0.0
    time.sleep(3)
    idle_cpu = round((s.cpu_seconds() or 0.0) - cpu1, 2)
    closed = [e for e in _access_log(s) if e.get("outcome") == "client_disconnected"]
    ok_logged = [e for e in _access_log(s) if e.get("status") == 200 and e.get("path") == "/v1/classify"]
    passed = len(closed) == clients and not ok_logged and idle_cpu < 1.0 and healthy(s)
    return {"passed": passed, "clients": clients, "audio_minutes_each": minutes, "logged_499": len(closed),
            "logged_200": len(ok_logged), "cpu_s_first_3s": round(cpu1 - cpu0, 2),
            "cpu_s_next_3s": idle_cpu, "upload_kb": round(len(body) / 1024, 1), "server_alive": s.alive()}


def lockout(s: Service, long_files: int, minutes: float, short_clients: int, seconds: float) -> Result:
    """`long_files` long silent uploads in flight while `short_clients` post short clips for `seconds`:
    short clips must neither be refused nor wait behind the long files. The long ones are hung up on
    at the end (cancelled mid-decode: the server must survive that)."""
    body = audio.silent_flac(minutes * 60)
    clips = audio.short_clips(64)
    long_status: list[str] = []
    stop = threading.Event()

    def post_long() -> None:
        """Upload, then wait for the answer until the measurement ends; hang up then (the work is cancelled)."""
        with s.connect(timeout=30) as sock:
            sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/flac\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            while not stop.is_set():
                if select.select([sock], [], [], 0.2)[0]:
                    long_status.append(sock.recv(64)[9:12].decode(errors="replace"))
                    return
            long_status.append("in flight")

    latencies: list[float] = []
    short_status: dict[int, int] = {}

    def post_short(k: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = k
            while not stop.is_set():
                t0 = time.monotonic()
                r = client.post(s.url + "/v1/classify", content=clips[i % len(clips)], headers=FLAC)
                short_status[r.status_code] = short_status.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(time.monotonic() - t0)
                i += short_clients

    long_threads = [threading.Thread(target=post_long) for _ in range(long_files)]
    for t in long_threads:
        t.start()
    time.sleep(1.0)  # the long uploads are in and decoding
    s.start_sampling()
    short_threads = [threading.Thread(target=post_short, args=(k,)) for k in range(short_clients)]
    for t in short_threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in short_threads:
        t.join(60)
    for t in long_threads:
        t.join(30)
    in_flight = long_status.count("in flight")
    peak = s.stop_sampling()
    # Long files may finish (200) during the run, but some must compete until its end, or nothing was measured.
    long_ok = set(long_status) <= {"in flight", "200"} and in_flight > 0
    passed = (p99(latencies) or 99) < 2.0 and set(short_status) == {200} and long_ok and healthy(s)
    return {"passed": passed, "long_files": long_files, "long_minutes": minutes, "upload_kb_each":
            round(len(body) / 1024, 1), "short_requests": sum(short_status.values()), "short_statuses": short_status,
            "short_p50_s": round(float(np.median(latencies)), 3) if latencies else None,
            "short_p99_s": p99(latencies), "long_in_flight_throughout": in_flight,
            "long_statuses": {str(k): long_status.count(k) for k in set(long_status)}, "peak_rss_mb": peak,
            "server_alive": s.alive()}


def _binary_infer(s: Service, rows: np.ndarray) -> httpx.Response:
    header = json.dumps({"inputs": [{"name": "waveform", "shape": list(rows.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": rows.nbytes}}],
                         "outputs": [{"name": "logits"}]}).encode()
    return httpx.post(s.url + "/v2/models/keywords/infer", content=header + rows.tobytes(), timeout=600,
                      headers={"content-type": "application/octet-stream",
                               "inference-header-content-length": str(len(header))})


def declared_only(s: Service, path: str, length: int, headers: str) -> tuple[str, float]:
    """Send only headers declaring `length` bytes: the answer must come before any body is sent."""
    t0 = time.monotonic()
    with s.connect(timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {length}\r\n\r\n".encode())
        head = sock.recv(4096)
    return head[9:12].decode(errors="replace"), round(time.monotonic() - t0, 3)


def v2_size(s: Service, json_limit: int, tensor_limit: int, max_row_s: float) -> Result:
    """The 2-hour /v2 request, an over-long row, the largest binary body, and four largest JSON bodies at once."""
    two_hours = 7200 * audio.SR * 4
    status_2h, t_2h = declared_only(s, "/v2/models/keywords/infer", two_hours,
                                     "Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 100\r\n")
    long_row = _binary_infer(s, np.zeros((1, round((max_row_s + 1) * audio.SR)), np.float32))
    s.start_sampling()
    rss_before = s.rss_mb()
    rows = max(1, tensor_limit // (round(max_row_s * audio.SR) * 4 + 1) - 1)
    biggest = _binary_infer(s, (0.01 * np.random.default_rng(0).standard_normal(
        (rows, round(max_row_s * audio.SR)))).astype(np.float32))
    n = int(json_limit / 10.5)  # "-0.0123456," is ~10 bytes a value
    values = np.round(0.01 * np.random.default_rng(1).standard_normal(n), 7)
    body = json.dumps({"inputs": [{"name": "waveform", "shape": [1, n], "datatype": "FP32",
                                   "data": values.tolist()}]}).encode()
    while len(body) > json_limit:
        n = int(n * 0.98)
        body = json.dumps({"inputs": [{"name": "waveform", "shape": [1, n], "datatype": "FP32",
                                       "data": values[:n].tolist()}]}).encode()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: httpx.post(s.url + "/v2/models/keywords/infer", content=body,
                                                      headers=JSON, timeout=600).status_code, range(4)))
    peak = s.stop_sampling()
    time.sleep(2)
    after = s.rss_mb()
    passed = (status_2h == "413" and t_2h < 2 and long_row.status_code == 413 and
              "DIFFRES_V2_MAX_ROW_S" in long_row.text and biggest.status_code == 200 and set(statuses) == {200})
    return {"passed": passed, "two_hour_status": status_2h, "two_hour_answer_s": t_2h,
            "long_row_status": long_row.status_code, "long_row_message": long_row.json().get("error"),
            "largest_binary": {"rows": rows, "row_s": max_row_s, "status": biggest.status_code},
            "four_json": {"body_mb": round(len(body) / 2**20, 2), "statuses": statuses},
            "rss_before_mb": rss_before, "peak_rss_mb": peak, "rss_after_mb": after}


def run_case(name: str, fn: Callable[[], Result]) -> Result:
    """Run one case; a crash of the case itself is a failed case, with the reason."""
    t0 = time.monotonic()
    try:
        result = fn()
    except Exception as exc:  # the suite reports every case, whatever one of them did
        result = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = round(time.monotonic() - t0, 1)
    return {"case": name, **result}


def run_all(work: Path, short: bool, ceiling_mb: float) -> list[Result]:
    """Every hostile case; `short` shrinks counts and durations, never what is checked."""
    results: list[Result] = []
    env = {**FAST_TIMEOUTS, "DIFFRES_MAX_DURATION_S": "600"}
    with Service(work, "hostile", env) as s:
        results.append(run_case("nested JSON on /v2", lambda: nested_json(s)))
        results.append(run_case("FLAC of unknown length", lambda: flac_unknown_length(s, 600)))
        results.append(run_case("header size", lambda: header_size(s)))
        results.append(run_case("slowloris", lambda: slowloris(s, 64, 3)))
        results.append(run_case("half-open requests", lambda: half_open(s, 600 if short else 5000, 3)))
    with Service(work, "storm") as s:
        results.append(run_case("disconnect storm", lambda: disconnect_storm(s, 16, 20)))
    with Service(work, "lockout") as s:
        results.append(run_case("lock-out by long silent files",
                                lambda: lockout(s, 16, 20, 8, 15 if short else 40)))
    with Service(work, "v2size") as s:
        from diffres.server.config import Settings  # the defaults the server runs with

        d = Settings()
        res = run_case("/v2 size", lambda: v2_size(s, d.max_json_bytes, d.max_tensor_bytes, d.v2_max_row_s))
        res["under_ceiling"] = (res.get("peak_rss_mb") or 1e9) < ceiling_mb
        res["passed"] = res["passed"] and res["under_ceiling"]
        results.append(res)
    return results
