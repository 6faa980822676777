"""Latency of live events: one recording streamed in real time to a real server over /v1/stream.

A sender thread sends 100 ms of s16le PCM when that 100 ms has "happened" (chunk k at t0 + (k+1) x 0.1 s);
the main thread stamps every message on arrival. Latency of an event = its arrival minus the moment
its reference keyword ended (t0 + offset); of the first notice = the arrival of the onset message
of the same event. Everything runs on 127.0.0.1 and the server is always stopped.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from diffres.clock import summary
from tools.loadtest.server import Server

CHUNK_S = 0.1


def _send_real_time(ws: Any, pcm: bytes, sr: int, t0: float) -> None:
    step = 2 * round(CHUNK_S * sr)
    for k, i in enumerate(range(0, len(pcm), step)):
        time.sleep(max(0.0, t0 + (k + 1) * CHUNK_S - time.monotonic()))
        ws.send(pcm[i:i + step])
    ws.send(json.dumps({"type": "end"}))


def stream_scene(model_path: Path, audio: np.ndarray, sr: int, work: Path) -> list[tuple[float, dict[str, Any]]]:
    """Serve the model alone, stream `audio` in real time; (seconds since start, message) for each message."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(model_path, Path(tmp) / model_path.name)
        env = {"DIFFRES_MODEL_DIR": tmp, "DIFFRES_DEFAULT_MODEL": model_path.stem, "DIFFRES_INTRA_OP_THREADS": "2"}
        with Server(env, work / "stream-server.log") as server:
            pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
            received: list[tuple[float, dict[str, Any]]] = []
            with connect(server.url.replace("http://", "ws://") + "/v1/stream", open_timeout=30) as ws:
                json.loads(ws.recv(timeout=30))  # ready
                t0 = time.monotonic()
                sender = threading.Thread(target=_send_real_time, args=(ws, pcm, sr, t0), daemon=True)
                sender.start()
                try:
                    while True:
                        message = json.loads(ws.recv(timeout=len(audio) / sr + 30))
                        received.append((time.monotonic() - t0, message))
                except ConnectionClosed:
                    pass
                sender.join(timeout=5)
    return received


def latencies(received: list[tuple[float, dict[str, Any]]], reference: list[tuple[str, float, float]],
              collar_s: float) -> dict[str, Any]:
    """Per matched event (same label, onset within the collar): seconds from the keyword's end to the event
    message, and to the onset message that announced it."""
    to_event, to_onset = [], []
    last_onset: dict[str, float] = {}
    used: set[int] = set()
    for at, m in received:
        if m["type"] == "onset":
            last_onset[m["label"]] = at
        if m["type"] != "event":
            continue
        hits = [i for i, (label, onset, _) in enumerate(reference)
                if i not in used and label == m["label"] and abs(onset - m["start_s"]) <= collar_s]
        if not hits:
            continue
        i = min(hits, key=lambda j: abs(reference[j][1] - m["start_s"]))
        used.add(i)
        to_event.append(at - reference[i][2])
        if m["label"] in last_onset:
            to_onset.append(last_onset[m["label"]] - reference[i][2])
    return {"matched": len(to_event), "reference": len(reference),
            "keyword_end_to_event_s": summary(to_event) if to_event else None,
            "keyword_end_to_onset_s": summary(to_onset) if to_onset else None}
