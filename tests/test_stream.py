"""/v1/stream end to end: a real uvicorn server on 127.0.0.1, a real WebSocket client, real onnxruntime.

The tiny model with a background label (tests/tiny_model.py) makes events from loud
bursts in silence, so every protocol path runs without shipped models; the keywords model on real
clips checks that 100 ms chunks give the events an upload of the same recording gives.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from diffres.decode import load_audio
from tests import tiny_model
from tests.conftest import DATA_DIR, encode, require_model
from tests.test_app_e2e import Server, start_server, stop

SR = tiny_model.SAMPLE_RATE
TIMEOUT_S = 30  # every receive is bounded: a server that never answers fails the test, never hangs it


def bursts(seconds: float, at: list[tuple[float, float]], sr: int = SR) -> np.ndarray:
    """Low noise with 440 Hz bursts (amplitude 0.5) at the given (start, end) seconds."""
    rng = np.random.default_rng(1)
    x = (0.002 * rng.standard_normal(round(seconds * sr))).astype(np.float32)
    for start, end in at:
        t = np.arange(round(start * sr), round(end * sr))
        x[t] += (0.5 * np.sin(2 * np.pi * 440 * t / sr)).astype(np.float32)
    return x


def s16(x: np.ndarray) -> bytes:
    """What a PCM_16 WAV of x holds, as raw s16le."""
    return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-models")
    tiny_model.build(folder / "tiny.onnx", background=True)
    return folder


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("stream-logs"), DIFFRES_MODEL_DIR=str(tiny_dir),
                     DIFFRES_DEFAULT_MODEL="tiny", DIFFRES_STREAM_IDLE_TIMEOUT_S="1",
                     DIFFRES_STREAM_MAX_CHUNK_BYTES="65536")
    try:
        yield s
    finally:
        stop(s)


def ws_url(server: Server, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/v1/stream" + (f"?{query}" if query else "")


def receive_all(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes, and its close code."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=TIMEOUT_S)))
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None


def stream(server: Server, pcm: bytes, query: str = "", chunk: int = 1600) -> tuple[list[dict[str, Any]], int | None]:
    """Send pcm in chunks of `chunk` bytes, then end; everything the server said, and its close code."""
    with connect(ws_url(server, query), open_timeout=TIMEOUT_S) as ws:
        ready = json.loads(ws.recv(timeout=TIMEOUT_S))
        assert ready["type"] == "ready", ready
        return send_all(ws, ready, pcm, chunk)


def send_all(ws: ClientConnection, ready: dict[str, Any], pcm: bytes,
             chunk: int = 1600) -> tuple[list[dict[str, Any]], int | None]:
    for i in range(0, len(pcm), chunk):
        ws.send(pcm[i:i + chunk])
    ws.send(json.dumps({"type": "end"}))
    messages, code = receive_all(ws)
    return [ready, *messages], code


def upload(server: Server, data: bytes, query: str = "") -> dict[str, Any]:
    r = httpx.post(f"{server.url}/v1/classify?{query}", content=data, headers={"content-type": "audio/wav"},
                   timeout=TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.json()


def same_events(streamed: list[dict[str, Any]], uploaded: list[dict[str, Any]]) -> None:
    assert [e["label"] for e in streamed] == [e["label"] for e in uploaded]
    for s, u in zip(streamed, uploaded, strict=True):  # one frame of slack: batched vs single-row float sums
        assert s["start_s"] == pytest.approx(u["start_s"], abs=0.011)
        assert s["end_s"] == pytest.approx(u["end_s"], abs=0.011)
        assert s["score"] == pytest.approx(u["score"], abs=1e-4)


def test_stream_in_100ms_chunks_gives_the_upload_events(server: Server) -> None:
    sounds = [(1.0, 1.25), (4.0, 4.25), (6.5, 7.0)]  # on the 0.25 s hop, so every window holding one says "mid"
    x = bursts(8.0, sounds)
    messages, code = stream(server, s16(x), "windows=true", chunk=2 * SR // 10)  # 100 ms of int16
    assert code == 1000
    body = upload(server, encode(x, SR))
    events = [m for m in messages if m["type"] == "event"]
    assert len(events) == 3 and {e["label"] for e in events} == {"mid"}
    # The tiny model fires on any window touching a burst: the first one starts a hop before the burst, the
    # event ends half a hop before that window's end, and its flat curves leave the onset at the window's start.
    for event, (start, _) in zip(events, sounds, strict=True):
        assert (event["start_s"], event["end_s"]) == (start - 0.25, start + 0.125)
    same_events(events, body["events"])
    end = messages[-1]
    assert end["type"] == "end" and end["events"] == 3 and end["duration_s"] == pytest.approx(8.0)
    assert end["windows"] == body["windowing"]["windows"] == sum(m["type"] == "window" for m in messages)
    assert [p["label"] for p in end["predictions"]] == [p["label"] for p in body["predictions"][:3]]
    # Every event was announced by an onset first, and pushed before the end of the audio arrived.
    onsets = [m for m in messages if m["type"] == "onset"]
    assert [o["label"] for o in onsets] == ["mid"] * 3
    kinds = [m["type"] for m in messages if m["type"] in ("onset", "event")]
    assert kinds == ["onset", "event"] * 3  # the run's notice, then its event (here one window holds it)
    assert all(e["stream_s"] < 8.0 for e in events[:2])


def test_resampled_float_stereo_stream_matches_the_upload(server: Server) -> None:
    rate = 44100
    mono = bursts(6.0, [(2.0, 2.5)], sr=rate)
    stereo = np.stack([mono, mono], axis=1)
    messages, code = stream(server, stereo.astype("<f4").tobytes(), f"sample_rate={rate}&format=f32le&channels=2",
                            chunk=4410 * 8 + 4)  # chunks that split a sample frame
    assert code == 1000
    body = upload(server, encode(stereo, rate, subtype="FLOAT"))
    events = [m for m in messages if m["type"] == "event"]
    assert len(events) == 1
    same_events(events, body["events"])


def test_thresholds_apply_to_streams(server: Server) -> None:
    x = s16(bursts(4.0, [(1.0, 1.25)]))
    assert not [m for m in stream(server, x, "min_score=0.9")[0] if m["type"] == "event"]
    messages = stream(server, x, "min_score=0.9&thresholds=mid:0.55")[0]  # a per-label bar below the global one
    assert messages[0]["thresholds"] == {"low": 0.9, "mid": 0.55, "high": 0.9}
    assert [m["label"] for m in messages if m["type"] == "event"] == ["mid"]


def refused(server: Server, query: str = "", send: list[bytes | str] = ()) -> tuple[dict[str, Any], int | None]:
    """Connect, send, and return the error message and close code the server ends with."""
    with connect(ws_url(server, query), open_timeout=TIMEOUT_S) as ws:
        for message in send:
            ws.send(message)
        messages, code = receive_all(ws)
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 1, messages
    return errors[0], code


@pytest.mark.parametrize("query,code,close", [
    ("format=mp3", "invalid_parameters", 4422), ("sample_rate=10", "invalid_parameters", 4422),
    ("bogus=1", "invalid_parameters", 4422), ("thresholds=nope:0.5", "invalid_parameters", 4422),
    ("thresholds=_background_:0.5", "invalid_parameters", 4422), ("model=nope", "model_not_found", 4404)])
def test_bad_parameters_close_with_a_clear_code(server: Server, query: str, code: str, close: int) -> None:
    error, got = refused(server, query)
    assert (error["code"], got) == (code, close)


@pytest.mark.parametrize("query,send,code,close", [
    ("format=f32le", [np.array([0.1, np.nan], "<f4").tobytes()], "non_finite_audio", 1007),
    ("format=f32le", [np.array([0.1, 1e6], "<f4").tobytes()], "out_of_range_audio", 1007),
    ("", [b"\x00\x01\x02", json.dumps({"type": "end"})], "invalid_audio", 1007),  # ends inside a sample
    ("", [json.dumps({"type": "end"})], "empty_audio", 1007),
    ("", ["hello"], "unsupported_message", 1003),
    ("", [json.dumps({"type": "pause"})], "unsupported_message", 1003),
    ("", [bytes(65538)], "chunk_too_large", 1009)])
def test_malformed_chunks_close_with_a_clear_code(server: Server, query: str, send: list[bytes | str], code: str,
                                                  close: int) -> None:
    error, got = refused(server, query, send)
    assert (error["code"], got) == (code, close)
    assert error["message"]


def test_an_idle_stream_is_closed(server: Server) -> None:
    error, got = refused(server, "", [s16(bursts(0.2, []))])
    assert (error["code"], got) == ("idle_timeout", 4408)


def test_a_full_server_refuses_streams_and_a_disconnect_frees_the_room(tiny_dir: Path, tmp_path: Path) -> None:
    s = start_server(tmp_path, DIFFRES_MODEL_DIR=str(tiny_dir), DIFFRES_DEFAULT_MODEL="tiny",
                     DIFFRES_QUEUE_LIMIT="2", DIFFRES_STREAM_SLOTS="2")
    try:
        with connect(ws_url(s), open_timeout=TIMEOUT_S) as first:
            assert json.loads(first.recv(timeout=TIMEOUT_S))["type"] == "ready"
            first.send(s16(bursts(1.0, [(0.2, 0.4)])))
            error, code = refused(s)
            assert (error["code"], code) == ("overloaded", 1013)
            r = httpx.post(f"{s.url}/v1/classify", content=encode(bursts(1.0, []), SR),
                           headers={"content-type": "audio/wav"}, timeout=TIMEOUT_S)
            assert r.status_code == 503  # uploads and streams share one admission
            first.socket.shutdown(socket.SHUT_RDWR)  # the client vanishes without a closing handshake
            first.socket.close()
        messages, code = stream_when_admitted(s, s16(bursts(2.0, [(0.5, 0.75)])))  # the lease came back
        assert code == 1000 and [m["label"] for m in messages if m["type"] == "event"] == ["mid"]
    finally:
        stop(s)
    lines = [json.loads(line) for line in s.log_path.read_text().splitlines() if line.startswith("{")]
    assert any("stream client_disconnected" in line.get("message", "") for line in lines)


def stream_when_admitted(server: Server, pcm: bytes, within_s: float = 10.0) -> tuple[list[dict[str, Any]], int | None]:
    """`stream`, retried while the server still says overloaded (it learns of a vanished client asynchronously)."""
    deadline = time.monotonic() + within_s
    while True:
        with connect(ws_url(server), open_timeout=TIMEOUT_S) as ws:
            first = json.loads(ws.recv(timeout=TIMEOUT_S))
            if first["type"] == "ready":
                return send_all(ws, first, pcm)
        assert first["code"] == "overloaded" and time.monotonic() < deadline, first
        time.sleep(0.1)  # polling the server's admission; nothing to wait on across processes


KEYWORDS = ["alexa", "computer", "jarvis", "snowboy"]


def test_keyword_recording_streamed_in_100ms_chunks_gives_the_upload_events(tmp_path: Path) -> None:
    require_model("keywords")
    clips = [sorted((DATA_DIR / "keywords" / k).glob("*.flac"))[:1] for k in KEYWORDS]
    if not all(clips):
        pytest.skip(f"no keyword clips under {DATA_DIR / 'keywords'} (../shared/data): real-audio test skipped")
    sr, gap = 16000, np.zeros(24000, np.float32)
    x = np.concatenate([part for c in clips for part in (load_audio(c[0], sr), gap)])
    sf.write(tmp_path / "long.wav", x, sr, subtype="PCM_16")
    data = (tmp_path / "long.wav").read_bytes()
    pcm = sf.read(tmp_path / "long.wav", dtype="int16")[0].astype("<i2").tobytes()
    s = start_server(tmp_path)
    try:
        body = upload(s, data)
        messages, code = stream(s, pcm, "model=keywords", chunk=2 * sr // 10)
    finally:
        stop(s)
    assert code == 1000 and body["events"], body  # a recording of four keywords gives events
    same_events([m for m in messages if m["type"] == "event"], body["events"])
