"""Live streaming over WebSocket, `/v1/stream`: raw PCM in, sound events out as soon as they are known.

Protocol (docs: live streaming):
  connect  ws://HOST:PORT/v1/stream?model=keywords&sample_rate=16000&format=s16le&channels=1
           (version=N: a repository version of the model; default its highest ready one, which serves the
           whole stream even when a newer one is loaded meanwhile)
           format: s16le (int16 little-endian) or f32le (float32 little-endian, [-1, 1]); sample_rate:
           any from 1000 to 768000 Hz (default: the model's), resampled server-side with soxr;
           channels are interleaved and mixed to mono. Optional, as for uploads: min_score,
           thresholds=label:score,..., top_k; windows=true also sends every window's result.
           Any other parameter is refused (4422).
  server   {"type": "ready", "model", "model_version", "repository_version", "labels", "background_label",
           "thresholds", "sample_rate" (the model's), "window_s", "hop_s"}
  client   binary messages of PCM, any size up to DIFFRES_STREAM_MAX_CHUNK_BYTES (a sample may
           straddle two messages); then the text message {"type": "end"} when the audio is over.
  server   {"type": "onset", "label", "start_s", "end_s", "score", "stream_s"}: a label started to
           fire (a window supports it; window bounds): an early notice, which becomes an event only
           if the label holds for the model's event_windows windows
           {"type": "event", "label", "start_s", "end_s", "score", "stream_s"}: an event, final, sent
           as soon as the label has held (diffres/events.py); the same events an upload of the same
           audio gives (the pipeline's, diffres/pipeline.py)
           {"type": "window", "start_s", "end_s", "predictions"}: with windows=true
           after "end": the last windows and events, {"type": "end", "duration_s", "windows",
           "events", "detected", "predictions" (clip level, as uploads)}, then close 1000.
  Times are seconds of audio since the stream began; `stream_s` is the audio received when the
  message was sent. Errors: {"type": "error", "code", "message"}, then the close code:
  1003 a text message other than end; 1007 bad samples (NaN/Inf, out of range, a stream that ends
  inside a sample or holds no audio); 1009 a message over the size limit; 1011 internal error;
  1013 try again later (the model is at capacity, or the server is not ready or shutting down);
  4404 unknown model; 4408 idle (no message for DIFFRES_STREAM_IDLE_TIMEOUT_S); 4422 invalid parameters.

The stream is the pipeline's live form (`Pipeline.live`): windows are cut as they fill (the
upload's window plan), so a stream always runs windowed, even when short; each message is decoded
and its windows classified in one worker thread, their rows joining the model's micro-batcher.
Memory per stream is bounded however long it runs: one window plus one message of audio, the
resampler's state, one window's curves for the open run. Admission is the uploads': the stream
holds a lease of DIFFRES_STREAM_SLOTS work units from the model's batcher for its life, and a full
model refuses it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect

from diffres.contract import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from diffres.errors import DiffresError, InvalidParameters, ModelNotFound, Unavailable
from diffres.events import parse_thresholds
from diffres.pipeline import ClassifyOptions, LiveClassification, WindowStep
from diffres.schemas import Event, StreamEnd, StreamEvent, StreamReady, StreamWindow
from diffres.server.batching import Lease, LeaseRunner
from diffres.server.config import Settings
from diffres.server.errors import public
from diffres.server.loaded import LoadedModel
from diffres.server.threads import run_to_completion

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_BAD_DATA, CLOSE_TOO_BIG = 1000, 1003, 1007, 1009
CLOSE_INTERNAL, CLOSE_TRY_LATER = 1011, 1013
CLOSE_NOT_FOUND, CLOSE_IDLE, CLOSE_BAD_PARAMS = 4404, 4408, 4422


class StreamParams(BaseModel):
    """Query parameters of /v1/stream; unknown ones are refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, max_length=100, description="Model name; default: the default model")
    version: int | None = Field(None, ge=0, description="Repository version; default: the highest ready one")
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


class StreamSession:
    """One connection: PCM messages -> the pipeline's live classification (in a worker thread) -> messages."""

    def __init__(self, ws: WebSocket, model: LoadedModel, params: StreamParams, options: ClassifyOptions,
                 settings: Settings, lease: Lease) -> None:
        self.ws, self.model, self.params, self.settings = ws, model, params, settings
        self.runner = LeaseRunner(lease, asyncio.get_running_loop())
        self.live: LiveClassification = model.pipeline.live(self.runner, options, pcm_format=params.format,
                                                            channels=params.channels, sample_rate=params.sample_rate)
        self.events = 0

    @property
    def stream_s(self) -> float:
        return self.live.received_s

    async def run(self) -> str:
        """Serve the stream until its end message ("completed") or the client leaving ("client_disconnected")."""
        info, plan = self.model.info, self.model.plan
        rules = self.live.answer.tracker.rules
        await self.ws.send_json(StreamReady(
            model=info.name, model_version=info.version, repository_version=self.model.version,
            labels=list(info.labels),
            background_label=info.background_label, sample_rate=info.sample_rate,
            thresholds={label: t for label, t in zip(info.labels, rules.thresholds) if label != info.background_label},
            window_s=plan.window / info.sample_rate, hop_s=plan.hop / info.sample_rate).model_dump())
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
        await self._send_steps(await run_to_completion(self.live.push, data, on_cancel=self.runner.cancel))

    async def _end(self) -> None:
        steps, closing = await run_to_completion(self.live.end, on_cancel=self.runner.cancel)
        await self._send_steps(steps)
        for event in closing:
            await self._send_event("event", event)
        answer = self.live.answer
        await self.ws.send_json(StreamEnd(duration_s=self.live.audio.duration_s, windows=answer.windows,
                                          events=self.events, detected=self.events > 0,
                                          predictions=answer.predictions()).model_dump())
        await self.ws.close(CLOSE_NORMAL)

    async def _send_steps(self, steps: list[WindowStep]) -> None:
        """What each window decided, in order: the run it started (onset), the event it settled, its own result."""
        sr = self.model.info.sample_rate
        for step in steps:
            if step.onset is not None:
                await self.ws.send_json(_event_message("onset", step.onset, self.stream_s))
            for event in step.events:
                await self._send_event("event", event)
            if self.params.windows:
                await self.ws.send_json(StreamWindow(start_s=step.start / sr, end_s=(step.start + step.length) / sr,
                                                     predictions=step.predictions).model_dump())

    async def _send_event(self, kind: Literal["onset", "event"], event: Event) -> None:
        self.events += 1
        self.model.metrics.observe_events(self.model.name, [event.label])
        await self.ws.send_json(_event_message(kind, event, self.stream_s))


def _event_message(kind: Literal["onset", "event"], event: Event, stream_s: float) -> dict[str, Any]:
    return StreamEvent(type=kind, label=event.label, start_s=event.start_s, end_s=event.end_s, score=event.score,
                       stream_s=stream_s).model_dump()


def _params(ws: WebSocket) -> StreamParams:
    try:
        return StreamParams.model_validate(dict(ws.query_params))
    except ValidationError as exc:
        raise InvalidParameters("; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}"
                                          for e in exc.errors())) from exc


def _close_code(exc: DiffresError) -> int:
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
        with ws.app.state.registry.get(params.model, params.version).hold() as model:  # the stream's whole life
            options = ClassifyOptions(top_k=params.top_k, min_score=params.min_score,
                                      thresholds=parse_thresholds(params.thresholds))
            options.event_rules(model.info)  # 4422 before taking a lease
            with model.batcher.lease(settings.stream_slots) as lease:
                session = StreamSession(ws, model, params, options, settings, lease)
                outcome = await session.run()
    except StreamClosed as exc:
        outcome = exc.code
        await _close_with_error(ws, exc.close_code, exc.code, exc.message)
    except DiffresError as exc:
        err = public(exc)
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
