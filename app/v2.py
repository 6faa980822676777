"""Open Inference Protocol v2 (KServe / Triton HTTP), so stock Triton and KServe clients work.

Inputs `waveform` FP32 [batch, samples] at the model's sample rate and, optionally, `lengths` INT64
[batch] (valid samples per row; absent: every row full length). No decoding, no windowing: raw
tensor semantics; rows go through the micro-batcher like any other input. Outputs logits,
importance, frames_in, frames_out (default) and logmel (on request) as OIP tensors. Supports the
binary tensor data extension (Inference-Header-Content-Length), which tritonclient uses by default.
Errors follow the protocol: `{"error": "<message>"}` (plus `code`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from runtime.audio import MAX_ABS_SAMPLE
from app.errors import ApiError, PayloadTooLarge, UnsupportedMediaType
from app.inference import run_rows
from app.models import LoadedModel, ModelRegistry
from app.uploads import limited_stream, media_type
from runtime.contract import (DATATYPES, FRAMES_IN, FRAMES_OUT, IMPORTANCE, INPUTS, LENGTHS, LOGITS, LOGMEL, OUTPUTS,
                              WAVEFORM, ModelInfo, frames_in)
from runtime.runner import DEFAULT_OUTPUTS, RowOutput

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
HEADER_LENGTH = "inference-header-content-length"
NUMPY = {"FP32": "<f4", "INT64": "<i8"}
OUTPUT_SHAPES: dict[str, Callable[[ModelInfo], list[int]]] = {
    LOGITS: lambda i: [-1, len(i.labels)], IMPORTANCE: lambda i: [-1, -1], FRAMES_IN: lambda i: [-1],
    FRAMES_OUT: lambda i: [-1], LOGMEL: lambda i: [-1, -1, i.n_mels]}


class TensorInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorInput]
    outputs: list[RequestedOutput] | None = None


class BadTensor(ApiError):
    status, code = 400, "invalid_tensor"


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "diffres-service", "version": "2", "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    is_ready = _registry(request).ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{model_name}")
async def model_metadata(request: Request, model_name: str) -> dict[str, Any]:
    m = _registry(request).get(model_name)
    i = m.info
    return {
        "name": m.name, "versions": [i.version], "platform": "onnxruntime_onnx",
        "inputs": [{"name": WAVEFORM, "datatype": DATATYPES[WAVEFORM], "shape": [-1, -1]},
                   {"name": LENGTHS, "datatype": DATATYPES[LENGTHS], "shape": [-1]}],
        "outputs": [{"name": name, "datatype": DATATYPES[name], "shape": OUTPUT_SHAPES[name](i)} for name in OUTPUTS],
        "parameters": {"labels": list(i.labels), "sample_rate": i.sample_rate, "delta": i.delta,
                       "clip_seconds": i.clip_seconds, "hop_ms": i.hop_ms, "version": i.version,
                       "optional_inputs": [LENGTHS], "default_outputs": list(DEFAULT_OUTPUTS)},
    }


@router.get("/models/{model_name}/ready")
async def model_ready(request: Request, model_name: str) -> dict[str, Any]:
    m = _registry(request).get(model_name)
    return {"name": m.name, "ready": True}


async def _read_body(request: Request) -> tuple[bytes, int]:
    """The whole body, bounded (JSON floats are costly to parse), and where its JSON header ends."""
    kind = media_type(request)
    if kind.startswith(("multipart/", "audio/", "application/x-www-form-urlencoded")):
        raise UnsupportedMediaType(f"unsupported content type '{kind}'; send application/json "
                                   "(or the binary tensor extension with Inference-Header-Content-Length)")
    settings = request.app.state.settings
    header_len = request.headers.get(HEADER_LENGTH)
    limit = settings.max_upload_bytes if header_len else settings.max_json_bytes
    try:
        body = b"".join([chunk async for chunk in limited_stream(request, limit)])
    except PayloadTooLarge as exc:
        if header_len:
            raise
        raise PayloadTooLarge(f"JSON request body exceeds {limit} bytes (DIFFRES_MAX_JSON_BYTES); use the "
                              "binary tensor extension (Inference-Header-Content-Length) for large inputs") from exc
    if header_len is None:
        return body, len(body)
    if not header_len.isdigit() or int(header_len) > len(body):
        raise BadTensor(f"invalid {HEADER_LENGTH} header: {header_len!r}")
    return body, int(header_len)


def _parse(body: bytes, split: int) -> tuple[InferRequest, bytes]:
    """JSON header -> request model; runs in a worker thread (megabytes of JSON take a while)."""
    try:
        return InferRequest.model_validate(json.loads(body[:split])), body[split:]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        raise BadTensor(f"invalid inference request: {where}: {first['msg']}") from exc
    except ValueError as exc:  # JSON syntax, or undecodable bytes
        raise BadTensor(f"invalid JSON in the inference request: {exc}"[:500]) from exc


def _decode(tensor: TensorInput, binary: bytes, dtype: str) -> np.ndarray:
    """A tensor's values, from its binary slice or its JSON data, flat."""
    size = math.prod(tensor.shape)
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        itemsize = np.dtype(NUMPY[dtype]).itemsize
        if binary_size != itemsize * size or len(binary) != binary_size:
            raise BadTensor(f"binary_data_size {binary_size} of '{tensor.name}' does not match shape {tensor.shape} "
                            f"{dtype} ({itemsize * size} bytes; {len(binary)} bytes received)")
        return np.frombuffer(binary, dtype=NUMPY[dtype]).astype(NUMPY[dtype][1:])
    if tensor.data is None:
        raise BadTensor(f"input '{tensor.name}' has no data")
    try:
        flat = np.asarray(tensor.data, dtype=NUMPY[dtype][1:]).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadTensor(f"input '{tensor.name}' data is not a (nested) list of numbers of type {dtype}") from exc
    if flat.size != size:
        raise BadTensor(f"input '{tensor.name}' has {flat.size} values, shape {tensor.shape} needs {size}")
    return flat


def _split_binary(req: InferRequest, binary: bytes) -> dict[str, bytes]:
    """The binary tail holds the inputs that declare binary_data_size, in request order."""
    parts, offset = {}, 0
    for t in req.inputs:
        size = (t.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0:
                raise BadTensor(f"binary_data_size of '{t.name}' must be a non-negative integer")
            parts[t.name], offset = binary[offset:offset + size], offset + size
    if offset != len(binary):
        raise BadTensor(f"{len(binary)} bytes of binary tensor data, the inputs declare {offset}")
    return parts


def _inputs(req: InferRequest, binary: bytes, model: LoadedModel,
            max_duration_s: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The request's waveform [batch, samples] float32 and optional lengths [batch] int64, validated."""
    names = [t.name for t in req.inputs]
    if WAVEFORM not in names or any(n not in INPUTS for n in names) or len(set(names)) != len(names):
        raise BadTensor(f"expected input '{WAVEFORM}' and optionally '{LENGTHS}', got {names}")
    tensors = {t.name: t for t in req.inputs}
    parts = _split_binary(req, binary)
    wave = tensors[WAVEFORM]
    if wave.datatype != "FP32":
        raise BadTensor(f"input '{WAVEFORM}' must be FP32, got {wave.datatype}")
    if len(wave.shape) != 2 or min(wave.shape) < 1:
        raise BadTensor(f"input '{WAVEFORM}' must have shape [batch, samples] with both >= 1, got {wave.shape}")
    batch, samples = wave.shape
    if samples > max_duration_s * model.info.sample_rate:
        raise PayloadTooLarge(f"{samples} samples exceed the {max_duration_s:g} s limit at "
                              f"{model.info.sample_rate} Hz", code="audio_too_long")
    flat = _decode(wave, parts.get(WAVEFORM, b""), "FP32")
    if not np.isfinite(flat).all():
        raise BadTensor(f"input '{WAVEFORM}' contains NaN or Inf", code="non_finite_audio")
    if flat.size and float(np.abs(flat).max()) > MAX_ABS_SAMPLE:
        raise BadTensor(f"input '{WAVEFORM}' values out of range (at most {MAX_ABS_SAMPLE:g}; audio is expected "
                        "in [-1, 1])", code="out_of_range_audio")
    return flat.reshape(batch, samples), _lengths(tensors.get(LENGTHS), parts, batch, samples)


def _lengths(tensor: TensorInput | None, parts: dict[str, bytes], batch: int, samples: int) -> np.ndarray | None:
    """Valid samples per row, each in [1, samples]; absent: every row full length."""
    if tensor is None:
        return None
    if tensor.datatype != "INT64":
        raise BadTensor(f"input '{LENGTHS}' must be INT64, got {tensor.datatype}")
    if tensor.shape != [batch]:
        raise BadTensor(f"input '{LENGTHS}' must have shape [{batch}] (one per waveform row), got {tensor.shape}")
    lengths = _decode(tensor, parts.get(LENGTHS, b""), "INT64")
    if lengths.min() < 1 or lengths.max() > samples:
        raise BadTensor(f"input '{LENGTHS}' values must be in [1, {samples}] (the waveform's samples per row)")
    return lengths


def _render(req: InferRequest, wanted: list[str], arrays: dict[str, np.ndarray], model: LoadedModel) -> Response:
    """OIP response: JSON tensors, or binary ones appended after the JSON header where asked for."""
    binary_default = bool((req.parameters or {}).get("binary_data_output", False))
    binary_wanted = {o.name: bool((o.parameters or {}).get("binary_data", binary_default)) for o in req.outputs or []}
    outputs, tail = [], []
    for name in wanted:
        array = arrays[name]
        entry: dict[str, Any] = {"name": name, "datatype": DATATYPES[name], "shape": list(array.shape)}
        if binary_wanted.get(name, binary_default):
            raw = array.astype(NUMPY[DATATYPES[name]]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = [v if not isinstance(v, float) or math.isfinite(v) else None
                             for v in array.reshape(-1).tolist()]
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.info.version, "outputs": outputs}
    if req.id is not None:
        body["id"] = req.id
    header = json.dumps(body).encode()
    if not tail:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(tail), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def _stack(rows: list[RowOutput], samples: int, hop: int) -> dict[str, np.ndarray]:
    """Per-row outputs back into the graph's padded tensors: frames beyond a row's own are 0."""
    frames = frames_in(samples, hop)

    def padded(values: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(values), frames, *values[0].shape[1:]), dtype=np.float32)
        for i, v in enumerate(values):
            out[i, :len(v)] = v
        return out

    arrays = {FRAMES_IN: np.array([r.frames_in for r in rows], dtype=np.int64),
              FRAMES_OUT: np.array([r.frames_out for r in rows], dtype=np.int64)}
    if rows[0].logits is not None:
        arrays[LOGITS] = np.stack([r.logits for r in rows])
    for name in (IMPORTANCE, LOGMEL):
        values = [getattr(r, name) for r in rows]
        if values[0] is not None:
            arrays[name] = padded(values)
    return arrays


@router.post("/models/{model_name}/infer")
async def infer(request: Request, model_name: str) -> Response:
    """OIP inference on `waveform` FP32 [batch, samples] (+ optional `lengths` INT64 [batch]); rows batch
    with other requests. Outputs as JSON tensors, or binary where asked."""
    model = _registry(request).get(model_name)
    body, split = await _read_body(request)
    req, binary = await run_in_threadpool(_parse, body, split)
    del body
    waveform, lengths = await run_in_threadpool(_inputs, req, binary, model,
                                                request.app.state.settings.max_duration_s)
    wanted = [o.name for o in req.outputs] if req.outputs else list(DEFAULT_OUTPUTS)
    unknown = [n for n in wanted if n not in OUTPUTS]
    if unknown:
        raise BadTensor(f"unknown outputs {unknown}; the model has {list(OUTPUTS)}")
    rows = list(waveform) if lengths is None else [row[:n] for row, n in zip(waveform, lengths, strict=True)]
    results = await run_rows(model, rows, tuple(dict.fromkeys([*wanted, LOGITS])))
    arrays = _stack(results, waveform.shape[1], model.info.backbone_hop)  # the frontend's own frame grid
    audio_s = sum(len(r) for r in rows) / model.info.sample_rate
    request.app.state.metrics.observe_result(model.name, audio_s, int(arrays[FRAMES_IN].sum()),
                                             int(arrays[FRAMES_OUT].sum()))
    return await run_in_threadpool(_render, req, wanted, arrays, model)
