"""A client for a running service, sync (`Client`) and async (`AsyncClient`), on httpx and websockets.

    with diffres.Client("http://127.0.0.1:8000", api_key="...") as client:
        result = client.classify("talk.m4a")          # the same ClassifyResult the Python API returns

Answers come back as the types of diffres.schemas; error answers raise the classes of
diffres.errors (`AudioTooLong`, `ModelNotFound`, `Overloaded`, ...) with the service's code and
message. A 503 is retried after its Retry-After, at most `retries` times. Both clients share every
request and answer rule below; they differ only in how the bytes travel.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, TypeAdapter

from diffres.errors import DiffresError, error_for
from diffres.schemas import BatchResult, ClassifyResult, ModelList, StreamMessage

M = TypeVar("M", bound=BaseModel)
Audio = str | os.PathLike[str] | bytes | BinaryIO | np.ndarray  # a path, encoded bytes, a file, or samples
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_RETRY_WAIT_S = 30.0
_messages: TypeAdapter[StreamMessage] = TypeAdapter(StreamMessage)


def _upload(audio: Audio, sample_rate: int | None, name: str) -> tuple[str, bytes]:
    """(filename, bytes) of an upload; samples are sent as a float WAV (exact, no re-quantisation)."""
    if isinstance(audio, np.ndarray):
        if sample_rate is None:
            raise ValueError("an array of samples needs its sample_rate")
        import soundfile as sf

        buffer = io.BytesIO()
        sf.write(buffer, audio, sample_rate, format="WAV", subtype="FLOAT")
        return f"{name}.wav", buffer.getvalue()
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        return path.name, path.read_bytes()
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return name, bytes(audio)
    return Path(getattr(audio, "name", name)).name, audio.read()


def _options(model: str | None, top_k: int, min_score: float | None, thresholds: Mapping[str, float] | None,
             include_importance: bool, include_spectrogram: bool) -> dict[str, Any]:
    """The classify routes' query parameters (defaults left out)."""
    params: dict[str, Any] = {"top_k": top_k}
    if model:
        params["model"] = model
    if min_score is not None:
        params["min_score"] = min_score
    if thresholds:
        params["thresholds"] = ",".join(f"{label}:{score:g}" for label, score in thresholds.items())
    if include_importance:
        params["include_importance"] = "true"
    if include_spectrogram:
        params["include_spectrogram"] = "true"
    return params


def _error(response: httpx.Response) -> DiffresError:
    """The service's error answer as its exception class (`{"error": {"code", "message"}}`, or OIP's shape)."""
    try:
        body = response.json()
        error = body["error"]
        code, message = (error["code"], error["message"]) if isinstance(error, dict) else (body["code"], error)
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:500] or response.reason_phrase
    return error_for(response.status_code, code, message, dict(response.headers))


def _parsed(response: httpx.Response, kind: type[M]) -> M:
    if response.is_success:
        return kind.model_validate_json(response.content)
    raise _error(response)


def _retry_wait(response: httpx.Response, attempt: int, retries: int) -> float | None:
    """Seconds to wait before retrying a 503 (its Retry-After, bounded), or None: do not retry."""
    if response.status_code != 503 or attempt >= retries:
        return None
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.0), MAX_RETRY_WAIT_S)
    except ValueError:
        return 1.0


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _stream_url(base: str, params: dict[str, Any]) -> str:
    url = httpx.URL(base.rstrip("/") + "/v1/stream").copy_merge_params(params)
    return str(url).replace("http://", "ws://", 1).replace("https://", "wss://", 1)


def _stream_params(model: str | None, sample_rate: int | None, pcm_format: str, channels: int,
                   min_score: float | None, thresholds: Mapping[str, float] | None, top_k: int,
                   windows: bool) -> dict[str, Any]:
    params = _options(model, top_k, min_score, thresholds, False, False)
    params.update(format=pcm_format, channels=channels)
    if sample_rate is not None:
        params["sample_rate"] = sample_rate
    if windows:
        params["windows"] = "true"
    return params


def _pcm(chunk: np.ndarray | bytes) -> bytes:
    return bytes(chunk) if isinstance(chunk, (bytes, bytearray, memoryview)) else \
        np.ascontiguousarray(chunk, dtype="<f4").tobytes()


def _message(text: str | bytes) -> StreamMessage:
    """A stream message as its type; an error message raises the exception of its code."""
    data = json.loads(text)
    if data.get("type") == "error":
        raise error_for(None, data.get("code", "error"), data.get("message", ""))
    return _messages.validate_python(data)


class Client:
    """A running service, over HTTP (httpx) and WebSocket (websockets), synchronously."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 3, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, **kwargs)
            wait = _retry_wait(response, attempt, self.retries)
            if wait is None:
                return response
            time.sleep(wait)
        raise AssertionError("unreachable")

    def classify(self, audio: Audio, sample_rate: int | None = None, *, model: str | None = None, top_k: int = 5,
                 min_score: float | None = None, thresholds: Mapping[str, float] | None = None,
                 include_importance: bool = False, include_spectrogram: bool = False) -> ClassifyResult:
        """`POST /v1/classify`: one recording (path, bytes, file object, or samples with their rate)."""
        name, data = _upload(audio, sample_rate, "audio")
        params = _options(model, top_k, min_score, thresholds, include_importance, include_spectrogram)
        return _parsed(self._request("POST", "/v1/classify", params=params, files={"file": (name, data)}),
                       ClassifyResult)

    def classify_batch(self, audios: Iterable[Audio], sample_rate: int | None = None, *, model: str | None = None,
                       top_k: int = 5, min_score: float | None = None, thresholds: Mapping[str, float] | None = None,
                       include_importance: bool = False, include_spectrogram: bool = False) -> BatchResult:
        """`POST /v1/classify/batch`: several recordings in one request; each item has its answer or its error."""
        files = [("file", _upload(a, sample_rate, f"audio-{i}")) for i, a in enumerate(audios)]
        params = _options(model, top_k, min_score, thresholds, include_importance, include_spectrogram)
        return _parsed(self._request("POST", "/v1/classify/batch", params=params, files=files), BatchResult)

    def models(self) -> ModelList:
        """`GET /v1/models`: the loaded models, their labels and thresholds."""
        return _parsed(self._request("GET", "/v1/models"), ModelList)

    def ready(self) -> bool:
        """Whether `/readyz` says every model is loaded and warm."""
        return self._http.get("/readyz").is_success

    def stream(self, chunks: Iterable[np.ndarray | bytes], sample_rate: int | None = None, *,
               model: str | None = None, pcm_format: str = "s16le", channels: int = 1,
               min_score: float | None = None, thresholds: Mapping[str, float] | None = None, top_k: int = 3,
               windows: bool = False) -> Iterator[StreamMessage]:
        """`/v1/stream`: send PCM chunks (bytes in `pcm_format`, or float arrays with pcm_format="f32le") as
        they come, and get the service's messages (ready, onset, event, window, end) as they arrive."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        params = _stream_params(model, sample_rate, pcm_format, channels, min_score, thresholds, top_k, windows)
        with connect(_stream_url(self.url, params), additional_headers=_headers(self.api_key)) as ws:
            failure: list[BaseException] = []
            sender = threading.Thread(target=_send_all, args=(ws, chunks, failure), daemon=True)
            sender.start()
            try:
                while True:
                    try:
                        text = ws.recv()
                    except ConnectionClosed:
                        break
                    yield _message(text)
            finally:
                sender.join(timeout=5)
            if failure:
                raise failure[0]


def _send_all(ws: Any, chunks: Iterable[np.ndarray | bytes], failure: list[BaseException]) -> None:
    """The sync stream's sender thread: every chunk, then the end message."""
    from websockets.exceptions import ConnectionClosed

    try:
        for chunk in chunks:
            ws.send(_pcm(chunk))
        ws.send(json.dumps({"type": "end"}))
    except ConnectionClosed:
        pass  # the server closed the stream: its error message says why
    except BaseException as exc:  # noqa: BLE001 - the caller re-raises it
        failure.append(exc)


class AsyncClient:
    """A running service, over HTTP (httpx) and WebSocket (websockets), for asyncio."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 3, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.retries = retries
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(api_key), timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = await self._http.request(method, path, **kwargs)
            wait = _retry_wait(response, attempt, self.retries)
            if wait is None:
                return response
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def classify(self, audio: Audio, sample_rate: int | None = None, *, model: str | None = None,
                       top_k: int = 5, min_score: float | None = None, thresholds: Mapping[str, float] | None = None,
                       include_importance: bool = False, include_spectrogram: bool = False) -> ClassifyResult:
        """`POST /v1/classify` (see `Client.classify`)."""
        name, data = _upload(audio, sample_rate, "audio")
        params = _options(model, top_k, min_score, thresholds, include_importance, include_spectrogram)
        return _parsed(await self._request("POST", "/v1/classify", params=params, files={"file": (name, data)}),
                       ClassifyResult)

    async def classify_batch(self, audios: Iterable[Audio], sample_rate: int | None = None, *,
                             model: str | None = None, top_k: int = 5, min_score: float | None = None,
                             thresholds: Mapping[str, float] | None = None, include_importance: bool = False,
                             include_spectrogram: bool = False) -> BatchResult:
        """`POST /v1/classify/batch` (see `Client.classify_batch`)."""
        files = [("file", _upload(a, sample_rate, f"audio-{i}")) for i, a in enumerate(audios)]
        params = _options(model, top_k, min_score, thresholds, include_importance, include_spectrogram)
        return _parsed(await self._request("POST", "/v1/classify/batch", params=params, files=files), BatchResult)

    async def models(self) -> ModelList:
        """`GET /v1/models`."""
        return _parsed(await self._request("GET", "/v1/models"), ModelList)

    async def ready(self) -> bool:
        """Whether `/readyz` says every model is loaded and warm."""
        return (await self._http.get("/readyz")).is_success

    async def stream(self, chunks: Iterable[np.ndarray | bytes], sample_rate: int | None = None, *,
                     model: str | None = None, pcm_format: str = "s16le", channels: int = 1,
                     min_score: float | None = None, thresholds: Mapping[str, float] | None = None, top_k: int = 3,
                     windows: bool = False) -> AsyncIterator[StreamMessage]:
        """`/v1/stream` (see `Client.stream`); chunks are sent by a task while messages are yielded."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        params = _stream_params(model, sample_rate, pcm_format, channels, min_score, thresholds, top_k, windows)
        async with connect(_stream_url(self.url, params), additional_headers=_headers(self.api_key)) as ws:

            async def send_all() -> None:
                try:
                    for chunk in chunks:
                        await ws.send(_pcm(chunk))
                    await ws.send(json.dumps({"type": "end"}))
                except ConnectionClosed:
                    pass  # the server closed the stream: its error message says why

            sender = asyncio.create_task(send_all())
            try:
                while True:
                    try:
                        text = await ws.recv()
                    except ConnectionClosed:
                        break
                    yield _message(text)
            finally:
                sender.cancel()
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]

