"""The Open Inference Protocol v2 over gRPC: inference.GRPCInferenceService, for Triton's and KServe's clients.

The same service as HTTP /v2 (server/v2.py), behind another door: the app's registry, each
model's micro-batcher and admission (requests share batches with every other request), and
server/tensors.py's validation, so both answer the same input with the same tensors. Inputs
`waveform` FP32 [batch, samples] and optional `lengths` INT64 [batch], as typed `contents`
(fp32_contents, int64_contents) or `raw_input_contents`; outputs (the default set, or those asked
for, in that order) as `raw_output_contents`, which is what Triton answers and tritonclient reads, or
as typed `contents` when the request parameter `binary_data_output` is false.

Limits as over HTTP: messages up to DIFFRES_MAX_TENSOR_BYTES (gRPC itself refuses larger ones with
RESOURCE_EXHAUSTED), DIFFRES_V2_MAX_ROW_S per row (INVALID_ARGUMENT: retrying cannot help), the
/v2 body budget and the models' work-unit admission (RESOURCE_EXHAUSTED, retry advice). Calls are
framed by server/grpc_calls.py (keys, request ids, metrics, logs, status codes).

ModelStreamInfer is Triton's bidirectional stream: one response per request, in request order; the
requests of one stream run concurrently (up to DIFFRES_BATCH_SIZE at once), so a client that keeps
sending fills batches; an error answers that request (`error_message`) and the stream goes on.

Versions are the repository's (server/repository.py): `model_version` in a request picks one (empty:
the highest ready), and answers carry the version that produced them, as Triton does. The repository
RPCs (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload, Triton's messages) are the
registry's index, load and unload, the same calls HTTP's /v2/repository routes make; load and unload
are for admins (server/grpc_calls.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import Message
from starlette.concurrency import run_in_threadpool

from diffres.contract import DATATYPES
from diffres.server.grpc_calls import CallContext, CallGuard
from diffres.server.proto import grpc_predict_v2_pb2 as pb
from diffres.server.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from diffres.server.loaded import LoadedModel, check_parameters
from diffres.server.registry import ModelRegistry
from diffres.server.tensors import (BINARY_WEIGHT, SERVER_METADATA, BadTensor, TensorSpec, from_bytes, from_values,
                                    infer, model_metadata, read_inputs, wanted_outputs, wire_bytes)

M = TypeVar("M", bound=Message)
TYPED_FIELDS = {"FP32": "fp32_contents", "INT64": "int64_contents"}  # where each datatype's typed values go


def specs_of(request: pb.ModelInferRequest) -> list[TensorSpec]:
    return [TensorSpec(t.name, t.datatype, list(t.shape)) for t in request.inputs]


def typed_values(tensor: pb.ModelInferRequest.InferInputTensor, spec: TensorSpec) -> Any:
    """The repeated field that holds a datatype's typed values; empty where the tensor needs some: say where."""
    field = TYPED_FIELDS[spec.datatype]
    values = getattr(tensor.contents, field)
    if not values and spec.size:
        raise BadTensor(f"input '{spec.name}' has no values: {spec.datatype} goes in contents.{field}, "
                        "or send every input in raw_input_contents")
    return values


def read_request(request: pb.ModelInferRequest, sample_rate: int,
                 max_row_s: float) -> tuple[np.ndarray, np.ndarray | None]:
    """waveform and lengths of a request, validated (server/tensors.py), from raw or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadTensor(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
                        "(one per input, in the order of `inputs`)")
    if raw and any(t.HasField("contents") for t in request.inputs):
        raise BadTensor("send every input either in raw_input_contents or in its contents, not both")
    position = {t.name: i for i, t in enumerate(request.inputs)}

    def decode(spec: TensorSpec) -> np.ndarray:
        i = position[spec.name]
        return from_bytes(spec, raw[i]) if raw else from_values(spec, typed_values(request.inputs[i], spec))

    return read_inputs(specs_of(request), decode, sample_rate, max_row_s)


def typed_outputs(request: pb.ModelInferRequest) -> bool:
    """Typed `contents` only when asked for (`binary_data_output: false`, as over HTTP); raw otherwise."""
    if "binary_data_output" not in request.parameters:
        return False
    value = request.parameters["binary_data_output"]
    return value.WhichOneof("parameter_choice") == "bool_param" and not value.bool_param


def render(request: pb.ModelInferRequest, wanted: list[str], arrays: dict[str, np.ndarray],
           model: LoadedModel) -> pb.ModelInferResponse:
    """The answer: the wanted tensors in order, raw little-endian bytes or typed contents."""
    response = pb.ModelInferResponse(model_name=model.name, model_version=str(model.version), id=request.id)
    typed = typed_outputs(request)
    for name in wanted:
        array = arrays[name]
        tensor = response.outputs.add(name=name, datatype=DATATYPES[name], shape=array.shape)
        if typed:
            getattr(tensor.contents, TYPED_FIELDS[DATATYPES[name]]).extend(array.reshape(-1).tolist())
        else:
            response.raw_output_contents.append(wire_bytes(array, name))
    return response


def model_name_of(request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> str:
    """Triton's clients name the model in field 2 (field 1 is their repository's name); KServe's in field 1."""
    return request.triton_model_name or request.model_name


def framed(empty: type[M]) -> Callable[[Callable[..., Awaitable[M]]], Callable[..., Awaitable[M]]]:
    """A unary RPC inside its call frame (key, request id, metrics, log); on error the status, and an
    empty `empty` message (gRPC sends none with a non-OK status)."""

    def decorate(answer: Callable[..., Awaitable[M]]) -> Callable[..., Awaitable[M]]:
        @functools.wraps(answer)
        async def rpc(self: InferenceServicer, request: Any, context: CallContext) -> M:
            call = self.guard.call(answer.__name__, context)
            response = empty()
            with call:
                call.authorize()
                response = await answer(self, request)
            call.apply(context)
            return response

        return rpc

    return decorate


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService on an app's state (settings, metrics, registry, /v2 body budget)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.guard = CallGuard(state.settings, state.metrics, state.admin)

    @property
    def registry(self) -> ModelRegistry:
        return self.state.registry  # read per call: the lifespan replaces it at start-up

    def model(self, name: str, version: str = "") -> LoadedModel:
        """The named (or default) model at `version` (empty: the highest ready); NOT_FOUND for an unknown name
        or a version that is not ready."""
        return self.registry.get(name or None, version or None)

    @framed(pb.ServerLiveResponse)
    async def ServerLive(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @framed(pb.ServerReadyResponse)
    async def ServerReady(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        """Ready when every model file loaded (the rule of /readyz and /v2/health/ready)."""
        return pb.ServerReadyResponse(ready=self.registry.healthy)

    @framed(pb.ModelReadyResponse)
    async def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        self.model(request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    @framed(pb.ServerMetadataResponse)
    async def ServerMetadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**SERVER_METADATA)

    @framed(pb.ModelMetadataResponse)
    async def ModelMetadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        """The HTTP metadata's tensors (labels and the rest of its `parameters` have no field here)."""
        model = self.model(request.name, request.version)
        meta = model_metadata(model, self.registry.ready_versions(model.name))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])

    @framed(pb.RepositoryIndexResponse)
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        entry = pb.RepositoryIndexResponse.ModelIndex
        await self.registry.rescan()
        return pb.RepositoryIndexResponse(models=[entry(**row) for row in self.registry.index(request.ready)])

    @framed(pb.RepositoryModelLoadResponse)
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest) -> pb.RepositoryModelLoadResponse:
        """Load or reload a model (admins only): answered once its versions are checked and serving."""
        name = model_name_of(request)
        check_parameters(request.parameters)
        await self.registry.load(name)
        return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

    @framed(pb.RepositoryModelUnloadResponse)
    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest
                                    ) -> pb.RepositoryModelUnloadResponse:
        """Unload a model (admins only): answered once its versions are out of service and drained (or after
        DIFFRES_SHUTDOWN_TIMEOUT_S, while long streams finish)."""
        name = model_name_of(request)
        await self.registry.unload(name)
        return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

    @framed(pb.ModelInferResponse)
    async def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        return await self.infer(request)

    async def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """Admission first (nothing decoded when full), the message's memory in the /v2 body budget,
        validation in a worker thread, rows through the batcher, the answer; all on the version it began on."""
        with self.model(request.model_name, request.model_version).hold() as model:
            model.batcher.check_admission()
            budget, settings = self.state.v2_budget, self.state.settings
            reserved = budget.take(BINARY_WEIGHT * request.ByteSize())
            try:
                waveform, lengths = await run_in_threadpool(read_request, request, model.info.sample_rate,
                                                            settings.v2_max_row_s)
                wanted = wanted_outputs([o.name for o in request.outputs])
                arrays = await infer(model, waveform, lengths, wanted, self.state.metrics)
            finally:
                budget.give(reserved)
        return await run_in_threadpool(render, request, wanted, arrays, model)

    async def ModelStreamInfer(self, requests: AsyncIterable[pb.ModelInferRequest],
                               context: CallContext) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's stream: the key is checked once; each request is a call of its own (request id
        `<stream id>:<n>`), answered in order while later ones already run."""
        opening = self.guard.call("ModelStreamInfer", context)
        if not self.guard.allows(opening.method, opening.metadata):
            with opening:  # the refusal is recorded; an accepted stream's requests are recorded one by one
                opening.authorize()
            opening.apply(context)
            return
        window = max(1, self.state.settings.batch_size)
        pending: asyncio.Queue[asyncio.Task[pb.ModelStreamInferResponse] | None] = asyncio.Queue(window)
        reader = asyncio.create_task(self._read_stream(requests, context, opening.request_id, pending))
        try:
            while (task := await pending.get()) is not None:
                yield await task
            await reader  # a broken request stream ends this one with its error
        finally:
            reader.cancel()
            while not pending.empty():
                if (task := pending.get_nowait()) is not None:
                    task.cancel()
        context.set_trailing_metadata([("x-request-id", opening.request_id)])

    async def _read_stream(self, requests: AsyncIterable[pb.ModelInferRequest], context: CallContext,
                           stream_id: str, pending: asyncio.Queue[Any]) -> None:
        """Start each request as it arrives (waits while `pending` is full: back-pressure to the client)."""
        n = 0
        try:
            async for request in requests:
                await pending.put(asyncio.create_task(self._stream_one(request, context, f"{stream_id}:{n}")))
                n += 1
        except Exception:
            await pending.put(None)  # the answers so far still go out; then the error ends the stream
            raise
        await pending.put(None)  # not on cancellation: nobody is reading any more

    async def _stream_one(self, request: pb.ModelInferRequest, context: CallContext,
                          request_id: str) -> pb.ModelStreamInferResponse:
        call = self.guard.call("ModelStreamInfer", context, request_id)
        with call:
            return pb.ModelStreamInferResponse(infer_response=await self.infer(request))
        assert call.failure is not None
        return pb.ModelStreamInferResponse(error_message=call.failure.message, infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id))
