"""Application factory: settings -> metrics -> model registry (+ batchers) -> routes; `serve` runs it.

`diffres serve` (and `python -m diffres.server`) run `serve`; `diffres.server.asgi:app` is the
ASGI app for other servers. Models load in the background after start-up, so /healthz answers
immediately and /readyz turns 200 once every model is warm. SIGHUP (where the app runs in the main
thread) reloads the model repository the way polling and the repository API do (server/registry.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI

from diffres import __version__
from diffres.cpu import available_cpus
from diffres.decode import preload_ffmpeg
from diffres.schemas import ErrorResponse
from diffres.server.access import AdminAccess, install_api_keys, install_cors
from diffres.server.admission import ByteBudget
from diffres.server.config import Settings, environment, get_settings
from diffres.server.deps import known_query_parameters
from diffres.server.demo import install_demo
from diffres.server.docs import install_docs
from diffres.server.errors import install_error_handlers
from diffres.server.grpc_server import start_grpc
from diffres.server.http_guard import guarded_protocol
from diffres.server.logs import configure_logging
from diffres.server.metrics import Metrics
from diffres.server.middleware import RequestContextMiddleware
from diffres.server.openapi import parameters_in_place
from diffres.server.registry import ModelRegistry
from diffres.server.repository_api import router as repository_router
from diffres.server.routes import router
from diffres.server.stream import router as stream_router
from diffres.server.v2 import router as v2_router

log = logging.getLogger(__name__)

# Answered by the connection guard (server/http_guard.py) before any route, so possible on every operation.
TRANSPORT_ERRORS = {431: {"model": ErrorResponse, "description": "Request line and headers over "
                          "DIFFRES_MAX_HEADER_BYTES (the /v1 error shape on every route: no route has run yet)"}}


WORKERS_ADMIN_OFF = ("with DIFFRES_WORKERS > 1 a repository call reaches one worker process only: reload every "
                     "worker with SIGHUP to the server (uvicorn replaces its workers one by one), or set "
                     "DIFFRES_MODEL_POLL_S")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    preload_ffmpeg()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not logging.getLogger().handlers:  # e.g. `uvicorn diffres.server.asgi:app`: still JSON logs with request ids
            configure_logging(settings.log_level, settings.log_format)
        registry = ModelRegistry(settings, metrics)
        app.state.registry = registry
        grpc_server = await start_grpc(app.state)  # DIFFRES_GRPC_PORT: same loop, registry and batchers
        loading = asyncio.create_task(registry.start(), name="load-models")
        forget_signal = reload_on_sighup(registry)
        try:
            yield
        finally:
            forget_signal()
            # uvicorn has already finished the requests in flight; gRPC drains its calls; drain what they queued.
            if grpc_server is not None:
                await grpc_server.stop()
            await loading
            await registry.close()
            log.info("shut down: batchers drained")

    app = FastAPI(title="DiffRes audio classification", version=__version__, lifespan=lifespan,
                  responses=TRANSPORT_ERRORS,  # type: ignore[arg-type]
                  dependencies=[Depends(known_query_parameters)], docs_url=None, redoc_url=None,
                  description="Audio classification with DiffRes (learnt temporal resolution) on onnxruntime. "
                              "Errors are `{\"error\": {\"code\", \"message\"}}` (OIP /v2 routes: "
                              "`{\"error\": \"message\"}`).")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.v2_budget = ByteBudget(settings.v2_body_budget_bytes, settings.retry_after_s)  # /v2 bodies in memory
    app.state.admin = AdminAccess(settings)  # who may load and unload models (HTTP and gRPC)
    if settings.workers > 1:  # a repository call would reach one worker process: they would drift apart
        app.state.admin.refuse_all(WORKERS_ADMIN_OFF)
    app.state.registry = ModelRegistry(settings, metrics)  # not ready until the lifespan replaces it
    install_error_handlers(app)
    install_api_keys(app, settings)  # inside the request-id/access-log middleware: 401s are logged too
    app.add_middleware(RequestContextMiddleware, metrics=metrics, settings=settings)
    install_cors(app, settings)  # outermost: preflights and 401s carry the CORS headers
    app.include_router(router)
    app.include_router(v2_router)
    app.include_router(repository_router)
    app.include_router(stream_router)
    install_demo(app)
    install_docs(app)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = parameters_in_place(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def reload_on_sighup(registry: ModelRegistry) -> Callable[[], None]:
    """`kill -HUP` reconciles the model repository; returns how to undo it. Only from the main thread (a
    signal handler's home; Ray's replicas reload through their deployment's reconfigure instead)."""
    loop = asyncio.get_running_loop()
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return lambda: None
    try:
        loop.add_signal_handler(signal.SIGHUP, registry.request_reload)
    except (NotImplementedError, RuntimeError):  # a loop without signal support
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How `diffres serve` runs uvicorn, besides the app, the protocol class and the workers."""
    return {
        "host": settings.host, "port": settings.port,
        "log_config": None,  # keep our log handler
        "access_log": False,  # the middleware writes the access log, with the request id
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "server_header": False,
    }


def serve(settings: Settings | None = None) -> None:
    """Run the service with uvicorn in the foreground: the settings' host, port and connection limits; with
    `workers` > 1, that many processes (uvicorn's workers: `diffres.server.asgi:app` in each, its settings from
    the environment, the CPUs split between them)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    options = uvicorn_options(settings)
    if settings.workers > 1:
        env = environment(settings)
        env.setdefault("DIFFRES_CPUS", str(max(1, (settings.cpus or available_cpus()) // settings.workers)))
        os.environ.update(env)  # the workers are spawned: they read their settings from here
        get_settings.cache_clear()
        log.info("starting %d worker processes, onnxruntime on %s CPU(s) each", settings.workers, env["DIFFRES_CPUS"])
        uvicorn.run("diffres.server.asgi:app", workers=settings.workers,
                    http="diffres.server.http_guard:from_environment", **options)
        return
    uvicorn.run(create_app(settings), http=guarded_protocol(settings),  # header deadline and size, connection cap
                **options)
