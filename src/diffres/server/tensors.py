"""Open Inference Protocol v2 tensors, whatever carries them: one set of rules for HTTP /v2 and gRPC.

Both doors describe an input as name, datatype and shape, and decode its values their own way
(server/v2.py: JSON data or the binary extension; server/grpc_service.py: typed `contents` or
`raw_input_contents`) through `from_bytes` / `from_values` here. Everything else is shared, so the
two answer alike: which inputs exist, datatypes and shapes, the row limit (DIFFRES_V2_MAX_ROW_S,
checked before a value is decoded), finite in-range samples, `lengths`, output selection, rows
through the model's micro-batcher under one lease (the same admission as every other request),
per-row outputs stacked back into the graph's padded tensors, and the model metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffres.contract import (DATATYPES, FRAMES_IN, FRAMES_OUT, IMPORTANCE, INPUTS, LENGTHS, LOGITS, LOGMEL, OUTPUTS,
                              WAVEFORM, ModelInfo, frames_in)
from diffres.decode import MAX_ABS_SAMPLE
from diffres.errors import BadRequest, PayloadTooLarge
from diffres.runner import DEFAULT_OUTPUTS, RowOutput
from diffres.server.admission import row_units
from diffres.server.metrics import Metrics
from diffres.server.loaded import LoadedModel

NUMPY = {"FP32": "<f4", "INT64": "<i8"}  # wire dtypes: little-endian, as the protocol's raw tensors are
BINARY_WEIGHT = 2  # memory per byte of a binary/raw request: the bytes, then the padded copy and outputs
SERVER_METADATA: dict[str, Any] = {"name": "diffres-service", "version": "2", "extensions": ["binary_tensor_data"]}
PLATFORM = "onnxruntime_onnx"
OUTPUT_SHAPES: dict[str, Callable[[ModelInfo], list[int]]] = {
    LOGITS: lambda i: [-1, len(i.labels)], IMPORTANCE: lambda i: [-1, -1], FRAMES_IN: lambda i: [-1],
    FRAMES_OUT: lambda i: [-1], LOGMEL: lambda i: [-1, -1, i.n_mels]}


class BadTensor(BadRequest):
    status, code = 400, "invalid_tensor"


@dataclass(frozen=True)
class TensorSpec:
    """What a request declares about one input tensor, before any value is read."""

    name: str
    datatype: str
    shape: list[int]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


Decode = Callable[[TensorSpec], np.ndarray]  # an input's values, flat, of its datatype (the transport's own way)


def from_bytes(spec: TensorSpec, raw: bytes | memoryview) -> np.ndarray:
    """Raw little-endian values (no copy); their byte count must be what the shape and datatype need."""
    dtype = np.dtype(NUMPY[spec.datatype])
    if len(raw) != dtype.itemsize * spec.size:
        raise BadTensor(f"{len(raw)} bytes of raw data for '{spec.name}', shape {spec.shape} {spec.datatype} "
                        f"needs {dtype.itemsize * spec.size}")
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)


def from_values(spec: TensorSpec, values: Any) -> np.ndarray:
    """Typed values (a list or a protobuf repeated field) as a flat array; their count must fit the shape."""
    try:
        flat = np.asarray(values, dtype=NUMPY[spec.datatype][1:]).reshape(-1)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise BadTensor(f"input '{spec.name}' data is not a (nested) list of numbers of type {spec.datatype}") from exc
    if flat.size != spec.size:
        raise BadTensor(f"input '{spec.name}' has {flat.size} values, shape {spec.shape} needs {spec.size}")
    return flat


def check_names(specs: Sequence[TensorSpec]) -> dict[str, TensorSpec]:
    """`waveform`, optionally `lengths`, nothing else and nothing twice."""
    names = [s.name for s in specs]
    if WAVEFORM not in names or any(n not in INPUTS for n in names) or len(set(names)) != len(names):
        raise BadTensor(f"expected input '{WAVEFORM}' and optionally '{LENGTHS}', got {names}")
    return {s.name: s for s in specs}


def check_waveform(spec: TensorSpec, sample_rate: int, max_row_s: float) -> tuple[int, int]:
    """(batch, samples) of a FP32 [batch, samples] waveform; rows over the limit are refused before decoding."""
    if spec.datatype != "FP32":
        raise BadTensor(f"input '{WAVEFORM}' must be FP32, got {spec.datatype}")
    if len(spec.shape) != 2 or min(spec.shape) < 1:
        raise BadTensor(f"input '{WAVEFORM}' must have shape [batch, samples] with both >= 1, got {spec.shape}")
    batch, samples = spec.shape
    if samples > max_row_s * sample_rate:
        raise PayloadTooLarge(f"rows of {samples} samples exceed the {max_row_s:g} s limit at {sample_rate} Hz "
                              "(DIFFRES_V2_MAX_ROW_S: a row runs in one call); send long audio to /v1/classify, "
                              "which windows it", code="audio_too_long")
    return batch, samples


def check_samples(flat: np.ndarray) -> None:
    """Finite values the model's float32 spectrum can take."""
    if not np.isfinite(flat).all():
        raise BadTensor(f"input '{WAVEFORM}' contains NaN or Inf", code="non_finite_audio")
    if flat.size and float(np.abs(flat).max()) > MAX_ABS_SAMPLE:
        raise BadTensor(f"input '{WAVEFORM}' values out of range (at most {MAX_ABS_SAMPLE:g}; audio is expected "
                        "in [-1, 1])", code="out_of_range_audio")


def read_lengths(spec: TensorSpec | None, decode: Decode, batch: int, samples: int) -> np.ndarray | None:
    """Valid samples per row, each in [1, samples]; absent: every row full length."""
    if spec is None:
        return None
    if spec.datatype != "INT64":
        raise BadTensor(f"input '{LENGTHS}' must be INT64, got {spec.datatype}")
    if list(spec.shape) != [batch]:
        raise BadTensor(f"input '{LENGTHS}' must have shape [{batch}] (one per waveform row), got {spec.shape}")
    lengths = decode(spec)
    if lengths.min() < 1 or lengths.max() > samples:
        raise BadTensor(f"input '{LENGTHS}' values must be in [1, {samples}] (the waveform's samples per row)")
    return lengths


def read_inputs(specs: Sequence[TensorSpec], decode: Decode, sample_rate: int,
                max_row_s: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The request's waveform [batch, samples] float32 and optional lengths [batch] int64, validated.

    Declarations are checked first and values decoded only then, so an oversized or mistyped
    request costs no decoding."""
    tensors = check_names(specs)
    batch, samples = check_waveform(tensors[WAVEFORM], sample_rate, max_row_s)
    flat = decode(tensors[WAVEFORM])
    check_samples(flat)
    return flat.reshape(batch, samples), read_lengths(tensors.get(LENGTHS), decode, batch, samples)


def wanted_outputs(names: Sequence[str]) -> list[str]:
    """The outputs asked for, in that order; none named: the default set (logmel only on request)."""
    wanted = list(names) or list(DEFAULT_OUTPUTS)
    unknown = [n for n in wanted if n not in OUTPUTS]
    if unknown:
        raise BadTensor(f"unknown outputs {unknown}; the model has {list(OUTPUTS)}")
    return wanted


def stack(rows: list[RowOutput], samples: int, hop: int) -> dict[str, np.ndarray]:
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


async def run_rows(model: LoadedModel, rows: list[np.ndarray], outputs: tuple[str, ...]) -> list[RowOutput]:
    """Tensor rows through the batcher, a lease's worth at a time (a lease is at most the request's share)."""
    results: list[RowOutput] = []
    with model.batcher.lease(len(rows), row_units(max(len(r) for r in rows), model.plan.window)) as lease:
        for i in range(0, len(rows), lease.slots):
            results.extend(await lease.run(rows[i:i + lease.slots], outputs))
    return results


async def infer(model: LoadedModel, waveform: np.ndarray, lengths: np.ndarray | None, wanted: list[str],
                metrics: Metrics) -> dict[str, np.ndarray]:
    """The graph's output tensors for a validated request: each row as long as its `lengths` says, batched
    with other requests' rows, stacked on the frontend's own frame grid; counted in the audio metrics."""
    rows = list(waveform) if lengths is None else [row[:n] for row, n in zip(waveform, lengths, strict=True)]
    audio_s = sum(len(r) for r in rows) / model.info.sample_rate
    results = await run_rows(model, rows, tuple(dict.fromkeys([*wanted, LOGITS])))
    arrays = stack(results, waveform.shape[1], model.info.backbone_hop)
    metrics.observe_result(model.name, audio_s, int(arrays[FRAMES_IN].sum()), int(arrays[FRAMES_OUT].sum()))
    return arrays


def wire_bytes(array: np.ndarray, name: str) -> bytes:
    """An output tensor as the protocol's raw little-endian bytes."""
    return array.astype(NUMPY[DATATYPES[name]], copy=False).tobytes()


def model_metadata(model: LoadedModel, versions: Sequence[int]) -> dict[str, Any]:
    """The OIP model metadata: the repository versions ready, contract tensors, and (HTTP only: gRPC's message has
    no field for them) parameters, `version` the build identity of the version described."""
    i = model.info
    return {
        "name": model.name, "versions": [str(v) for v in versions], "platform": PLATFORM,
        "inputs": [{"name": WAVEFORM, "datatype": DATATYPES[WAVEFORM], "shape": [-1, -1]},
                   {"name": LENGTHS, "datatype": DATATYPES[LENGTHS], "shape": [-1]}],
        "outputs": [{"name": name, "datatype": DATATYPES[name], "shape": OUTPUT_SHAPES[name](i)} for name in OUTPUTS],
        "parameters": {"labels": list(i.labels), "sample_rate": i.sample_rate, "delta": i.delta,
                       "clip_seconds": i.clip_seconds, "hop_ms": i.hop_ms, "version": i.version,
                       "repository_version": model.version, "optional_inputs": [LENGTHS],
                       "default_outputs": list(DEFAULT_OUTPUTS)},
    }
