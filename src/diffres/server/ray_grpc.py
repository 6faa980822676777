"""Ray Serve's gRPC ingress for the OIP v2 service: replica methods named after the RPCs they answer.

Ray's gRPC proxy (`grpc_options` in deploy/ray/serve.yaml, with this proto's servicer function
SERVICER_FUNCTION) hands each call of inference.GRPCInferenceService to the replica method of the
same name, with Ray's RayServegRPCContext as `grpc_context` (the parameter name Ray looks for).
Each method is the plain service's (server/grpc_service.py) on the replica's own app state, so
keys, row limits, admission, metrics, logs and status codes are the same; ModelStreamInfer runs
over Ray's bidirectional streaming. What Ray decides instead of the service: the message size
(its proxy's RAY_SERVE_GRPC_MAX_MESSAGE_SIZE, which server/ray_main.py sets to
DIFFRES_MAX_TENSOR_BYTES), calls at once (max_ongoing_requests, max_queued_requests) and the drain
on shutdown (graceful_shutdown_timeout_s). The replicas never open DIFFRES_GRPC_PORT themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from fastapi import FastAPI

from diffres.server.grpc_service import InferenceServicer
from diffres.server.proto import grpc_predict_v2_pb2 as pb

SERVICER_FUNCTION = "diffres.server.proto.grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"


class GrpcIngress:
    """Mixed into the Ray replica class, which sets `_web` (its FastAPI app) before any call arrives."""

    _web: FastAPI | None
    _servicer: InferenceServicer | None = None

    @property
    def servicer(self) -> InferenceServicer:
        """The service on this replica's app state, made on the first call."""
        if self._servicer is None:
            assert self._web is not None, "gRPC call before the replica's app was built"
            self._servicer = InferenceServicer(self._web.state)
        return self._servicer

    async def ServerLive(self, request: pb.ServerLiveRequest, grpc_context: Any) -> pb.ServerLiveResponse:
        return await self.servicer.ServerLive(request, grpc_context)

    async def ServerReady(self, request: pb.ServerReadyRequest, grpc_context: Any) -> pb.ServerReadyResponse:
        return await self.servicer.ServerReady(request, grpc_context)

    async def ModelReady(self, request: pb.ModelReadyRequest, grpc_context: Any) -> pb.ModelReadyResponse:
        return await self.servicer.ModelReady(request, grpc_context)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, grpc_context: Any) -> pb.ServerMetadataResponse:
        return await self.servicer.ServerMetadata(request, grpc_context)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, grpc_context: Any) -> pb.ModelMetadataResponse:
        return await self.servicer.ModelMetadata(request, grpc_context)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, grpc_context: Any) -> pb.RepositoryIndexResponse:
        return await self.servicer.RepositoryIndex(request, grpc_context)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  grpc_context: Any) -> pb.RepositoryModelLoadResponse:
        return await self.servicer.RepositoryModelLoad(request, grpc_context)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    grpc_context: Any) -> pb.RepositoryModelUnloadResponse:
        return await self.servicer.RepositoryModelUnload(request, grpc_context)

    async def ModelInfer(self, request: pb.ModelInferRequest, grpc_context: Any) -> pb.ModelInferResponse:
        return await self.servicer.ModelInfer(request, grpc_context)

    async def ModelStreamInfer(self, requests: AsyncIterable[pb.ModelInferRequest],
                               grpc_context: Any) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for response in self.servicer.ModelStreamInfer(requests, grpc_context):
            yield response
