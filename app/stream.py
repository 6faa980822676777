"""Live streaming over WebSocket, `/v1/stream`: raw PCM in, sound events out as soon as they are known.

Protocol (the README shows a client):
  connect  ws://HOST:PORT/v1/stream?model=keywords&sample_rate=16000&format=s16le&channels=1
           format: s16le (int16 little-endian) or f32le (float32 little-endian, [-1, 1]); sample_rate:
           any from 1000 to 768000 Hz (default: the model's), resampled server-side with soxr;
           channels are interleaved and mixed to mono. Optional, as for uploads: min_score,
           thresholds=label:score,..., top_k; windows=true also sends every window's result.
  server   {"type": "ready", "model", "model_version", "labels", "background_label", "thresholds",
           "sample_rate" (the model's), "window_s", "hop_s"}
  client   binary messages of PCM, any size up to DIFFRES_STREAM_MAX_CHUNK_BYTES (a sample may
           straddle two messages); then the text message {"type": "end"} when the audio is over.
  server   {"type": "onset", "label", "start_s", "end_s", "score", "stream_s"}: an event began (its
           first window fired; window bounds, early notice for live use)
           {"type": "event", "label", "start_s", "end_s", "score", "stream_s"}: an event is over,
           sent as soon as the window after it is classified; the same events an upload of the same
           audio gives (runtime/events.py)
           {"type": "window", "start_s", "end_s", "predictions"}: with windows=true
           after "end": the last windows and events, {"type": "end", "duration_s", "windows",
           "events", "predictions" (clip level, as uploads)}, then close 1000.
  Times are seconds of audio since the stream began; `stream_s` is the audio received when the
  message was sent. Errors: {"type": "error", "code", "message"}, then the close code:
  1003 a text message other than end; 1007 bad samples (NaN/Inf, out of range, a stream that ends
  inside a sample or holds no audio); 1009 a message over the size limit; 1011 internal error;
  1013 try again later (the model is at capacity, or the server is not ready or shutting down);
  4404 unknown model; 4408 idle (no message for DIFFRES_STREAM_IDLE_TIMEOUT_S); 4422 invalid parameters.

Windows are cut from the stream as they fill (the upload's window plan and WindowCutter), so a
stream always runs windowed, even when short. Memory per stream is bounded however long it runs:
one window plus one message of audio, the resampler's state, the open event's curve (its length
is capped in runtime/events.py). Admission is the uploads': the stream holds a lease of
DIFFRES_STREAM_SLOTS work units from the model's batcher for its life, and a full model refuses it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect

from app.batching import Lease
from app.config import Settings
from app.errors import ApiError, InvalidParameters, ModelNotFound, Unavailable, api_error
from app.inference import ClassifyOptions, event_curves, softmax, top_predictions
from app.models import LoadedModel
from app.threads import run_to_completion
from runtime.audio import AudioInfo, AudioStream, WindowCutter
from runtime.contract import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from runtime.errors import AudioError, UndecodableAudio
from runtime.events import Event, EventTracker

log = logging.getLogger("app.stream")
router = APIRouter()

CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_BAD_DATA, CLOSE_TOO_BIG = 1000, 1003, 1007, 1009
CLOSE_INTERNAL, CLOSE_TRY_LATER = 1011, 1013
CLOSE_NOT_FOUND, CLOSE_IDLE, CLOSE_BAD_PARAMS = 4404, 4408, 4422

# format -> numpy dtype, scale to [-1, 1] (int16 / 32768, as libsndfile decodes PCM_16), subtype
PCM_FORMATS: dict[str, tuple[str, float, str]] = {"s16le": ("<i2", 32768.0, "PCM_16"), "f32le": ("<f4", 1.0, "FLOAT")}


class StreamParams(BaseModel):
    """Query parameters of /v1/stream; unknown ones are refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, max_length=100, description="Model name; default: the default model")
    sample_rate: int | None = Field(None, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
                                    description="Rate of the PCM sent; default: the model's")
    format: Literal["s16le", "f32le"] = "s16le"
    channels: int = Field(1, ge=1, le=64, description="Interleaved channels, mixed to mono")
    min_score: float | None = Field(None, ge=0, le=1, description="Event threshold; default: the model's")
    thresholds: str = Field("", max_length=4000, description="Per-label thresholds, label:score,label:score")
    top_k: int = Field(3, ge=1, le=1000, description="Labels per window result and in the final summary")
    windows: bool = Field(False, description="Also send every window's result")


class StreamClosed(Exception):
    """End the stream with an error message and a close code."""

    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code, self.code, self.message = close_code, code, message


class PcmDecoder:
    """Raw interleaved PCM fed message by message, read as float32 frames (runtime.audio's Decoder protocol)."""

    def __init__(self, fmt: str, channels: int, sample_rate: int) -> None:
        dtype, self._scale, subtype = PCM_FORMATS[fmt]
        self._dtype = np.dtype(dtype)
        self._channels = channels
        self._frame_bytes = self._dtype.itemsize * channels
        self._pending = bytearray()
        self.info = AudioInfo(sample_rate, channels, None, "RAW", subtype)

    def feed(self, data: bytes) -> None:
        self._pending += data

    @property
    def frames_buffered(self) -> int:
        return len(self._pending) // self._frame_bytes

    def read(self, frames: int) -> np.ndarray:
        n = min(frames, self.frames_buffered)
        raw = bytes(self._pending[:n * self._frame_bytes])
        del self._pending[:n * self._frame_bytes]
        x = np.frombuffer(raw, self._dtype).astype(np.float32)
        if self._scale != 1.0:
            x /= self._scale
        return x.reshape(n, self._channels)

    def check_complete(self, frames_read: int) -> None:
        if self._pending:
            raise UndecodableAudio(f"the stream ended inside a sample frame ({len(self._pending)} stray bytes; "
                                   f"a frame is {self._frame_bytes} bytes)")

    def close(self) -> None:
        self._pending.clear()


def event_message(kind: str, event: Event, stream_s: float) -> dict[str, Any]:
    return {"type": kind, "label": event.label, "start_s": event.start_s, "end_s": event.end_s,
            "score": event.score, "stream_s": round(stream_s, 3)}


class StreamSession:
    """One connection's state: decoder -> resampler -> window cutter -> batcher lease -> event tracker."""

    def __init__(self, ws: WebSocket, model: LoadedModel, params: StreamParams, options: ClassifyOptions,
                 settings: Settings, lease: Lease) -> None:
        self.ws, self.model, self.params, self.settings, self.lease = ws, model, params, settings, lease
        self.options = options
        sr = model.info.sample_rate
        self.decoder = PcmDecoder(params.format, params.channels, params.sample_rate or sr)
        self.audio = AudioStream(self.decoder, self.decoder.info, sr)  # no duration limit: streams may be endless
        self.cutter = WindowCutter(model.plan.window, model.plan.hop)
        self.tracker = EventTracker(options.event_rules(model.info), sample_rate=sr, frame_hop=model.plan.frame_hop)
        self.events = 0

    @property
    def stream_s(self) -> float:
        return self.cutter.total / self.model.info.sample_rate

    async def run(self) -> str:
        """Serve the stream until its end message ("completed") or the client leaving ("client_disconnected")."""
        info, plan = self.model.info, self.model.plan
        await self.ws.send_json({
            "type": "ready", "model": info.name, "model_version": info.version, "labels": list(info.labels),
            "background_label": info.background_label, "sample_rate": info.sample_rate,
            "thresholds": {label: t for label, t in zip(info.labels, self.tracker.rules.thresholds)
                           if label != info.background_label},
            "window_s": plan.window / info.sample_rate, "hop_s": plan.hop / info.sample_rate})
        while True:
            message = await self._receive()
            if message is None:
                return "client_disconnected"
            if message.get("bytes") is not None:
                await self._audio(message["bytes"])
            else:
                self._expect_end(message.get("text"))
                await self._end()
                return "completed"

    async def _receive(self) -> dict[str, Any] | None:
        """The next message; None when the client went away."""
        timeout = self.settings.stream_idle_timeout_s
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
        except asyncio.TimeoutError:
            raise StreamClosed(CLOSE_IDLE, "idle_timeout",
                               f"no message for {timeout:g} s (DIFFRES_STREAM_IDLE_TIMEOUT_S)") from None
        return None if message["type"] == "websocket.disconnect" else message

    @staticmethod
    def _expect_end(text: str | None) -> None:
        try:
            if json.loads(text or "") == {"type": "end"}:
                return
        except ValueError:
            pass
        raise StreamClosed(CLOSE_UNSUPPORTED, "unsupported_message",
                           'send PCM as binary messages and {"type": "end"} as the only text message')

    async def _audio(self, data: bytes) -> None:
        if len(data) > self.settings.stream_max_chunk_bytes:
            raise StreamClosed(CLOSE_TOO_BIG, "chunk_too_large", f"a message of {len(data)} bytes exceeds the "
                               f"{self.settings.stream_max_chunk_bytes} byte limit (DIFFRES_STREAM_MAX_CHUNK_BYTES)")
        await self._classify(await run_to_completion(self._decode, data))

    def _decode(self, data: bytes) -> list[tuple[int, np.ndarray]]:
        """Buffered PCM -> model-rate samples -> the windows they complete (in a worker thread)."""
        self.decoder.feed(data)
        windows = []
        while self.decoder.frames_buffered:
            block = self.audio.read()
            if block is not None:
                windows += self.cutter.push(block)
        return windows

    def _drain(self) -> list[tuple[int, np.ndarray]]:
        """End of audio: the resampler's tail and the end-aligned last window."""
        windows = []
        while (block := self.audio.read()) is not None:
            windows += self.cutter.push(block)
        return windows + self.cutter.finish()

    async def _end(self) -> None:
        await self._classify(await run_to_completion(self._drain))
        for event in self.tracker.finish():
            await self._send_event("event", event)
        labels, k = self.model.info.labels, self.params.top_k
        predictions = [p.model_dump() for p in top_predictions(self.tracker.clip_scores(), labels, k)]
        await self.ws.send_json({"type": "end", "duration_s": round(self.audio.duration_s, 6),
                                 "windows": self.tracker.windows, "events": self.events,
                                 "predictions": predictions if self.tracker.windows else []})
        await self.ws.close(CLOSE_NORMAL)

    async def _classify(self, windows: list[tuple[int, np.ndarray]]) -> None:
        """Run windows through the lease (at most its slots at a time); push what they decide, in order."""
        sr, labels = self.model.info.sample_rate, self.model.info.labels
        for i in range(0, len(windows), self.lease.slots):
            group = windows[i:i + self.lease.slots]
            outs = await self.lease.run([w for _, w in group], self.options.outputs)
            for (start, window), out in zip(group, outs, strict=True):
                probs = softmax(out.logits)
                before = self.tracker.open
                for event in self.tracker.add(start, len(window), probs, *event_curves(out)):
                    await self._send_event("event", event)
                provisional = self.tracker.provisional()
                if provisional is not None and self.tracker.open is not before:
                    await self.ws.send_json(event_message("onset", provisional, self.stream_s))
                if self.params.windows:
                    await self.ws.send_json({
                        "type": "window", "start_s": start / sr, "end_s": (start + len(window)) / sr,
                        "predictions": [p.model_dump() for p in top_predictions(probs, labels, self.params.top_k)]})

    async def _send_event(self, kind: str, event: Event) -> None:
        self.events += 1
        await self.ws.send_json(event_message(kind, event, self.stream_s))


def _params(ws: WebSocket) -> StreamParams:
    try:
        return StreamParams.model_validate(dict(ws.query_params))
    except ValidationError as exc:
        raise InvalidParameters("; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}"
                                          for e in exc.errors())) from exc


def _close_code(exc: ApiError) -> int:
    if isinstance(exc, Unavailable):  # overloaded, not ready, shutting down
        return CLOSE_TRY_LATER
    if isinstance(exc, ModelNotFound):
        return CLOSE_NOT_FOUND
    return CLOSE_BAD_PARAMS if isinstance(exc, InvalidParameters) else CLOSE_BAD_DATA


async def _close_with_error(ws: WebSocket, close_code: int, code: str, message: str) -> None:
    """Tell the client why, then close; a client already gone is not an error."""
    try:
        await ws.send_json({"type": "error", "code": code, "message": message})
        await ws.close(close_code, reason=code[:120])
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Live classification of a PCM stream: events pushed as soon as known (protocol: the module docstring)."""
    await ws.accept()
    settings: Settings = ws.app.state.settings
    started, session = time.perf_counter(), None
    outcome = "closed"
    try:
        params = _params(ws)
        model = ws.app.state.registry.get(params.model)
        options = ClassifyOptions(top_k=params.top_k, min_score=params.min_score, thresholds=params.thresholds)
        options.event_rules(model.info)  # 4422 before taking a lease
        with model.batcher.lease(settings.stream_slots) as lease:
            session = StreamSession(ws, model, params, options, settings, lease)
            outcome = await session.run()
    except StreamClosed as exc:
        outcome = exc.code
        await _close_with_error(ws, exc.close_code, exc.code, exc.message)
    except (ApiError, AudioError) as exc:
        err = api_error(exc)
        outcome = err.code
        await _close_with_error(ws, _close_code(err), err.code, err.message)
    except (WebSocketDisconnect, OSError):
        outcome = "client_disconnected"
    except Exception:
        log.exception("stream failed")
        outcome = "internal_error"
        await _close_with_error(ws, CLOSE_INTERNAL, "internal_error", "internal error")
    finally:
        audio_s = session.stream_s if session is not None else 0.0
        log.info("stream %s after %.3f s of audio, %d events, %.1f s wall", outcome, audio_s,
                 session.events if session is not None else 0, time.perf_counter() - started)
