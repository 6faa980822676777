"""Open Inference Protocol v2 (KServe / Triton HTTP), so stock Triton and KServe clients work.

Inputs `waveform` FP32 [batch, samples] at the model's sample rate and, optionally, `lengths` INT64
[batch] (valid samples per row; absent: every row full length). No decoding, no windowing: raw
tensor semantics; rows go through the micro-batcher like any other input. Outputs logits,
importance, frames_in, frames_out (default) and logmel (on request) as OIP tensors. Supports the
binary tensor data extension (Inference-Header-Content-Length), which tritonclient uses by default
and which is the way to send large inputs. The tensor rules (validation, outputs, batching, metadata)
are server/tensors.py's, shared with the same protocol over gRPC (server/grpc_service.py).

Memory is bounded: a row runs in one call, so rows over `v2_max_row_s` are refused (413; /v1
windows long audio); bodies are limited (`max_json_bytes`, `max_tensor_bytes`) and all /v2 bodies
held at once share `v2_body_budget_bytes` (503 beyond, decided from Content-Length before reading);
JSON `data` arrays go straight to numpy (never through pydantic); JSON outputs are streamed.
Errors follow the protocol: `{"error": "<message>"}` (plus `code`), nesting bombs included.

Versions are the model repository's (server/repository.py), as Triton's: `/v2/models/{m}/versions/{v}`
(metadata, ready, infer) picks one, the routes without it the highest ready; answers say which in
`model_version`. The repository extension (index, load, unload) is server/repository_api.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from diffres.server.admission import ByteBudget
from diffres.errors import PayloadTooLarge, UnsupportedMediaType
from diffres.server.loaded import LoadedModel
from diffres.server.registry import ModelRegistry
from diffres.server.tensors import (BINARY_WEIGHT, NUMPY, SERVER_METADATA, BadTensor, TensorSpec, from_bytes,
                                    from_values, infer as infer_tensors, model_metadata as metadata_of, read_inputs,
                                    wanted_outputs, wire_bytes)
from diffres.server.uploads import limited_stream, media_type
from diffres.contract import DATATYPES, INPUTS

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
HEADER_LENGTH = "inference-header-content-length"
JSON_WEIGHT = 8  # bytes of memory per JSON body byte while parsing (Python objects, then numpy)
JSON_CHUNK = 65536  # values per piece of a streamed JSON output


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


class OipError(BaseModel):
    """The protocol's error body; `code` is this service's stable error code."""

    error: str
    code: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {400: "Invalid inference request or tensor", 404: "Unknown model",
             413: "Body or row over its limit (the message names the setting)",
             415: "Unsupported content type", 422: "A query parameter this route does not take (named in the message)",
             503: "Not ready, overloaded or shutting down (see Retry-After)"}
    return {c: {"model": OipError, "description": texts[c]} for c in codes}


_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string", "enum": list(INPUTS)}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string", "enum": ["FP32", "INT64"]}, "parameters": {"type": "object"},
    "data": {"type": "array", "items": {}}}}
INFER_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"}, "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}}},
    # The binary tensor extension (any content type, the JSON header's length in Inference-Header-Content-Length)
    # depends on a header, which OpenAPI cannot tie to a body; the route description says how to use it.
    }}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Output tensors (JSON, or binary after the JSON header when asked for)",
          "content": {"application/json": {"schema": {"type": "object"}},
                      "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    **_errors(400, 404, 413, 415, 422, 503)}


ModelName = Annotated[str, Path(description="Model name (file stem)", examples=["keywords"])]
ModelVersion = Annotated[str, Path(description="Repository version (the folder's number)", examples=["1"])]


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return SERVER_METADATA


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "Loading, shutting down, or a model failed to load"}})
async def ready(request: Request) -> JSONResponse:
    """Ready when every model file loaded (the same rule as /readyz)."""
    is_ready = _registry(request).healthy
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


def _metadata(request: Request, model_name: str, version: str | None) -> dict[str, Any]:
    registry = _registry(request)
    model = registry.get(model_name, version)
    return metadata_of(model, registry.ready_versions(model.name))


@router.get("/models/{model_name}", responses=_errors(404, 503))
async def model_metadata(request: Request, model_name: ModelName) -> dict[str, Any]:
    """Metadata of the model's highest ready version; `versions` lists every ready one."""
    return _metadata(request, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}", responses=_errors(404, 503))
async def version_metadata(request: Request, model_name: ModelName, model_version: ModelVersion) -> dict[str, Any]:
    return _metadata(request, model_name, model_version)


@router.get("/models/{model_name}/ready", responses=_errors(404, 503))
async def model_ready(request: Request, model_name: ModelName) -> dict[str, Any]:
    m = _registry(request).get(model_name)
    return {"name": m.name, "ready": True}


@router.get("/models/{model_name}/versions/{model_version}/ready", responses=_errors(404, 503))
async def version_ready(request: Request, model_name: ModelName, model_version: ModelVersion) -> dict[str, Any]:
    m = _registry(request).get(model_name, model_version)
    return {"name": m.name, "version": str(m.version), "ready": True}


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


@asynccontextmanager
async def _received(request: Request) -> AsyncIterator[tuple[bytearray, int]]:
    """The whole body, bounded, and where its JSON header ends; its memory is reserved in the budget
    from Content-Length (the limit when chunked) before a byte is read, and freed on exit."""
    kind = media_type(request)
    if kind.startswith(("multipart/", "audio/", "application/x-www-form-urlencoded")):
        raise UnsupportedMediaType(f"unsupported content type '{kind}'; send application/json "
                                   "(or the binary tensor extension with Inference-Header-Content-Length)")
    settings = request.app.state.settings
    header_len = request.headers.get(HEADER_LENGTH)
    limit, setting = ((settings.max_tensor_bytes, "DIFFRES_MAX_TENSOR_BYTES") if header_len is not None else
                      (settings.max_json_bytes, "DIFFRES_MAX_JSON_BYTES"))
    too_large = (f"request body exceeds {limit} bytes ({setting})" + ("" if header_len is not None else
                 "; use the binary tensor extension (Inference-Header-Content-Length) for large inputs"))
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(too_large)
    weight = BINARY_WEIGHT if header_len is not None else JSON_WEIGHT
    budget: ByteBudget = request.app.state.v2_budget
    reserved = budget.take(weight * (declared if declared is not None else limit))
    try:
        body = bytearray()
        try:
            async for chunk in limited_stream(request, limit):
                body += chunk
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(too_large) from exc
        if header_len is None:
            yield body, len(body)
        elif not header_len.isdigit() or int(header_len) > len(body):
            raise BadTensor(f"invalid {HEADER_LENGTH} header: {header_len!r}")
        else:
            yield body, int(header_len)
    finally:
        budget.give(reserved)


def _parse(body: bytearray, split: int) -> tuple[InferRequest, dict[str, Any], memoryview]:
    """JSON header -> request model, the inputs' JSON `data` kept aside (pydantic never copies them),
    and the binary tail; runs in a worker thread (megabytes of JSON take a while)."""
    try:
        raw = json.loads(bytes(memoryview(body)[:split]))
        datas = {}
        if isinstance(raw, dict) and isinstance(raw.get("inputs"), list):
            for tensor in raw["inputs"]:
                if isinstance(tensor, dict) and isinstance(tensor.get("name"), str) and "data" in tensor:
                    datas[tensor["name"]] = tensor.pop("data")
        return InferRequest.model_validate(raw), datas, memoryview(body)[split:]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        raise BadTensor(f"invalid inference request: {where}: {first['msg']}"[:500]) from exc
    except RecursionError as exc:  # a nesting bomb: json gives up deep inside, cheaply
        raise BadTensor("invalid JSON in the inference request: nested too deeply") from exc
    except ValueError as exc:  # JSON syntax, or undecodable bytes
        raise BadTensor(f"invalid JSON in the inference request: {exc}"[:500]) from exc


def _decode(tensor: TensorInput, binary: memoryview | None, data: Any) -> np.ndarray:
    """A tensor's values, from its binary slice or its JSON data, flat."""
    spec = _spec(tensor)
    binary_size = (tensor.parameters or {}).get("binary_data_size")
    if binary_size is not None:
        needed = np.dtype(NUMPY[spec.datatype]).itemsize * spec.size
        received = len(binary) if binary is not None else 0
        if binary_size != needed or received != binary_size:
            raise BadTensor(f"binary_data_size {binary_size} of '{tensor.name}' does not match shape {tensor.shape} "
                            f"{spec.datatype} ({needed} bytes; {received} bytes received)")
        return from_bytes(spec, binary if binary is not None else b"")
    if data is None:
        raise BadTensor(f"input '{tensor.name}' has no data")
    if not isinstance(data, list):
        raise BadTensor(f"input '{tensor.name}' data must be a (nested) list of numbers")
    return from_values(spec, data)


def _spec(tensor: TensorInput) -> TensorSpec:
    return TensorSpec(tensor.name, tensor.datatype, tensor.shape)


def _split_binary(req: InferRequest, binary: memoryview) -> dict[str, memoryview]:
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


def _inputs(req: InferRequest, datas: dict[str, Any], binary: memoryview, model: LoadedModel,
            max_row_s: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The request's waveform [batch, samples] float32 and optional lengths [batch] int64, validated
    (server/tensors.py), each input's values from its binary slice or its JSON data."""
    parts = _split_binary(req, binary)
    tensors = {t.name: t for t in req.inputs}

    def decode(spec: TensorSpec) -> np.ndarray:
        return _decode(tensors[spec.name], parts.get(spec.name), datas.get(spec.name))

    return read_inputs([_spec(t) for t in req.inputs], decode, model.info.sample_rate, max_row_s)


def _json_values(array: np.ndarray) -> Iterator[bytes]:
    """A tensor's values as the inside of a JSON list, a chunk at a time (non-finite values: null)."""
    flat = array.reshape(-1)
    for i in range(0, flat.size, JSON_CHUNK):
        part = flat[i:i + JSON_CHUNK]
        values = part.tolist()
        if part.dtype.kind == "f" and not np.isfinite(part).all():
            values = [v if math.isfinite(v) else None for v in values]
        yield (b"," if i else b"") + json.dumps(values).encode()[1:-1]


def _json_body(head: dict[str, Any], outputs: list[tuple[dict[str, Any], np.ndarray]]) -> Iterator[bytes]:
    """The OIP JSON response, streamed: never one Python list of every value."""
    yield json.dumps(head).encode()[:-1] + b', "outputs": ['
    for n, (entry, array) in enumerate(outputs):
        yield (b", " if n else b"") + json.dumps(entry).encode()[:-1] + b', "data": ['
        yield from _json_values(array)
        yield b"]}"
    yield b"]}"


def _render(req: InferRequest, wanted: list[str], arrays: dict[str, np.ndarray], model: LoadedModel) -> Response:
    """OIP response: JSON tensors (streamed), or binary ones appended after the JSON header where asked for."""
    binary_default = bool((req.parameters or {}).get("binary_data_output", False))
    binary_wanted = {o.name: bool((o.parameters or {}).get("binary_data", binary_default)) for o in req.outputs or []}
    head: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if req.id is not None:
        head["id"] = req.id
    entries = [(name, {"name": name, "datatype": DATATYPES[name], "shape": list(arrays[name].shape)})
               for name in wanted]
    if not any(binary_wanted.get(name, binary_default) for name in wanted):
        return StreamingResponse(_json_body(head, [(e, arrays[n]) for n, e in entries]), media_type="application/json")
    outputs, tail = [], []
    for name, entry in entries:
        if binary_wanted.get(name, binary_default):
            raw = wire_bytes(arrays[name], name)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = [v if not isinstance(v, float) or math.isfinite(v) else None
                             for v in arrays[name].reshape(-1).tolist()]
        outputs.append(entry)
    header = json.dumps({**head, "outputs": outputs}).encode()
    return Response(header + b"".join(tail), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


@router.post("/models/{model_name}/infer", openapi_extra=INFER_BODY, responses=INFER_RESPONSES)
async def infer(request: Request, model_name: ModelName) -> Response:
    """OIP inference on `waveform` FP32 [batch, samples] (+ optional `lengths` INT64 [batch]) with the model's
    highest ready version; rows batch with other requests. Outputs as JSON tensors, or binary where asked.

    Large inputs: the binary tensor extension (the JSON header, then raw little-endian tensors; header
    `Inference-Header-Content-Length` = the JSON header's bytes; up to DIFFRES_MAX_TENSOR_BYTES).
    """
    return await _infer(request, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer", openapi_extra=INFER_BODY,
             responses=INFER_RESPONSES)
async def infer_version(request: Request, model_name: ModelName, model_version: ModelVersion) -> Response:
    """OIP inference with one repository version of the model (as the route without a version otherwise)."""
    return await _infer(request, model_name, model_version)


async def _infer(request: Request, model_name: str, version: str | None) -> Response:
    """Admission before reading the body (503), the body bounded, the request on the version it began on."""
    settings = request.app.state.settings
    with _registry(request).get(model_name, version).hold() as model:
        model.batcher.check_admission()
        async with _received(request) as (body, split):
            req, datas, binary = await run_in_threadpool(_parse, body, split)
            waveform, lengths = await run_in_threadpool(_inputs, req, datas, binary, model, settings.v2_max_row_s)
            del datas, binary
            wanted = wanted_outputs([o.name for o in req.outputs or []])
            arrays = await infer_tensors(model, waveform, lengths, wanted, request.app.state.metrics)
    return await run_in_threadpool(_render, req, wanted, arrays, model)
