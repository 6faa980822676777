"""Open Inference Protocol v2 (KServe / Triton HTTP), so stock Triton and KServe clients work.

Input `waveform` FP32 [batch, samples] at the model's sample rate (no decoding, no windowing: raw
tensor semantics); outputs logits, importance, frames_in, frames_out as OIP tensors. Supports the
binary tensor data extension (Inference-Header-Content-Length), which tritonclient uses by default.
Errors follow the protocol: `{"error": "<message>"}` (plus `code`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from app.audio import MAX_ABS_SAMPLE
from app.errors import ApiError, PayloadTooLarge, UnsupportedMediaType
from app.inference import run_rows
from app.models import INPUT, OUTPUTS, LoadedModel, ModelRegistry
from app.uploads import limited_stream, media_type

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {"logits": "FP32", "importance": "FP32", "frames_in": "INT64", "frames_out": "INT64"}
NUMPY = {"FP32": "<f4", "INT64": "<i8"}


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
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, len(i.labels)]},
                    {"name": "importance", "datatype": "FP32", "shape": [-1, -1]},
                    {"name": "frames_in", "datatype": "INT64", "shape": [-1]},
                    {"name": "frames_out", "datatype": "INT64", "shape": [-1]}],
        "parameters": {"labels": list(i.labels), "sample_rate": i.sample_rate, "delta": i.delta,
                       "clip_seconds": i.clip_seconds, "hop_ms": i.hop_ms, "version": i.version},
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


def _waveform(req: InferRequest, binary: bytes, model: LoadedModel, max_duration_s: float) -> np.ndarray:
    """The request's [batch, samples] float32 waveform, validated against the model contract."""
    if len(req.inputs) != 1 or req.inputs[0].name != INPUT:
        raise BadTensor(f"expected exactly one input named '{INPUT}', got {[t.name for t in req.inputs]}")
    tensor = req.inputs[0]
    if tensor.datatype != "FP32":
        raise BadTensor(f"input '{INPUT}' must be FP32, got {tensor.datatype}")
    if len(tensor.shape) != 2 or min(tensor.shape) < 1:
        raise BadTensor(f"input '{INPUT}' must have shape [batch, samples] with both >= 1, got {tensor.shape}")
    batch, samples = tensor.shape
    if samples > max_duration_s * model.info.sample_rate:
        raise PayloadTooLarge(f"{samples} samples exceed the {max_duration_s:g} s limit at "
                              f"{model.info.sample_rate} Hz", code="audio_too_long")
    size = batch * samples
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        if binary_size != 4 * size or len(binary) != binary_size:
            raise BadTensor(f"binary_data_size {binary_size} does not match shape {tensor.shape} FP32 "
                            f"({4 * size} bytes; {len(binary)} bytes received)")
        flat = np.frombuffer(binary, dtype="<f4").astype(np.float32)
    else:
        if tensor.data is None:
            raise BadTensor(f"input '{INPUT}' has no data")
        try:
            flat = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise BadTensor(f"input '{INPUT}' data is not a (nested) list of numbers") from exc
        if flat.size != size:
            raise BadTensor(f"input '{INPUT}' has {flat.size} values, shape {tensor.shape} needs {size}")
    if not np.isfinite(flat).all():
        raise BadTensor(f"input '{INPUT}' contains NaN or Inf", code="non_finite_audio")
    if flat.size and float(np.abs(flat).max()) > MAX_ABS_SAMPLE:
        raise BadTensor(f"input '{INPUT}' values out of range (at most {MAX_ABS_SAMPLE:g}; audio is expected "
                        "in [-1, 1])", code="out_of_range_audio")
    return flat.reshape(batch, samples)


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


@router.post("/models/{model_name}/infer")
async def infer(request: Request, model_name: str) -> Response:
    """OIP inference on `waveform` FP32 [batch, samples]; outputs as JSON tensors, or binary where asked."""
    model = _registry(request).get(model_name)
    body, split = await _read_body(request)
    req, binary = await run_in_threadpool(_parse, body, split)
    del body
    waveform = await run_in_threadpool(_waveform, req, binary, model, request.app.state.settings.max_duration_s)
    wanted = [o.name for o in req.outputs] if req.outputs else list(OUTPUTS)
    unknown = [n for n in wanted if n not in OUTPUTS]
    if unknown:
        raise BadTensor(f"unknown outputs {unknown}; the model has {list(OUTPUTS)}")
    rows = await run_rows(model, list(waveform))
    arrays = {"logits": np.stack([r.logits for r in rows]), "importance": np.stack([r.importance for r in rows]),
              "frames_in": np.array([r.frames_in for r in rows], dtype=np.int64),
              "frames_out": np.array([r.frames_out for r in rows], dtype=np.int64)}
    request.app.state.metrics.observe_result(model.name, waveform.size / model.info.sample_rate,
                                             int(arrays["frames_in"].sum()), int(arrays["frames_out"].sum()))
    return await run_in_threadpool(_render, req, wanted, arrays, model)
