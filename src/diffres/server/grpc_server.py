"""The gRPC server of the OIP v2 service (server/grpc_service.py), on DIFFRES_GRPC_PORT beside HTTP.

A grpc.aio server started in the app's lifespan, so it runs on uvicorn's event loop and serves the
app's own registry, batchers and metrics: nothing is loaded twice and both doors share admission.
Options: messages up to DIFFRES_MAX_TENSOR_BYTES (larger: RESOURCE_EXHAUSTED from gRPC itself),
at most DIFFRES_GRPC_MAX_CALLS calls at once (which, with the message size, bounds the memory of
received messages: gRPC reads a message whole before the service sees it), and no SO_REUSEPORT, so
a port taken by another process fails start-up instead of silently sharing it.

Shutdown drains like HTTP: at SIGTERM (or SIGINT) the server stops taking calls together with
uvicorn, and calls in flight get DIFFRES_SHUTDOWN_TIMEOUT_S to finish; the lifespan waits for that
before the batchers close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any

import grpc

from diffres.server.grpc_service import InferenceServicer
from diffres.server.proto import grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger("diffres.server.grpc")


def bind_address(host: str, port: int) -> str:
    """host:port as gRPC wants it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """One grpc.aio server for an app's state; `start` binds and serves, `stop` drains and ends."""

    def __init__(self, state: Any) -> None:
        settings = state.settings
        self.settings = settings
        self.server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", settings.max_tensor_bytes), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=settings.grpc_max_calls)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), self.server)
        self.port = 0
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> int:
        """Bind DIFFRES_HOST:DIFFRES_GRPC_PORT (0: any free port) and serve; returns the port."""
        address = bind_address(self.settings.host, self.settings.grpc_port)
        self.port = self.server.add_insecure_port(address)  # raises when the address cannot be bound
        await self.server.start()
        self._stop_with_uvicorn(asyncio.get_running_loop())
        log.info("gRPC: inference.GRPCInferenceService on %s (messages up to %d bytes, %d calls at once)",
                 bind_address(self.settings.host, self.port), self.settings.max_tensor_bytes,
                 self.settings.grpc_max_calls)
        return self.port

    def begin_stop(self) -> None:
        """Refuse new calls now (UNAVAILABLE); calls in flight get the shutdown grace period."""
        if self._stopping is None:
            log.info("gRPC: draining calls in flight (up to %d s)", self.settings.shutdown_timeout_s)
            self._stopping = asyncio.ensure_future(self.server.stop(self.settings.shutdown_timeout_s))

    async def stop(self) -> None:
        self.begin_stop()
        assert self._stopping is not None
        await self._stopping
        log.info("gRPC: stopped")

    def _stop_with_uvicorn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Chain onto the SIGTERM/SIGINT handlers uvicorn installed (with signal.signal, before the lifespan;
        it restores the originals on exit): uvicorn drains HTTP before the lifespan's shutdown runs, and
        without this gRPC would take new calls all through that drain, the two grace periods adding up."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.begin_stop)
                previous(signum, frame)

            signal.signal(sig, handler)


async def start_grpc(state: Any) -> GrpcServer | None:
    """The gRPC server for an app's state when DIFFRES_GRPC_PORT is set, serving; None when it is off."""
    if state.settings.grpc_port is None:
        return None
    server = GrpcServer(state)
    await server.start()
    return server
