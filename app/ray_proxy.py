"""Ray's HTTP proxy answers a clear, retryable 503 when a replica dies under a request.

Ray Serve's proxy sends nothing when the replica handling a request dies (its uvicorn then writes a
bare `500 Internal Server Error`). This middleware, loaded into the proxy through Ray's hook
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=app.ray_proxy:middlewares` (app/ray_main.py sets it),
answers such requests in the service's own error shape: 503 `replica_unavailable` with Retry-After,
which clients already retry. Everything the replica answered passes through untouched.
"""

from __future__ import annotations

import logging

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response

log = logging.getLogger("app.ray_proxy")
CALLBACK = "app.ray_proxy:middlewares"
RETRY_AFTER_S = 1
MESSAGE = "the replica handling this request stopped before answering; retry it (another replica takes it)"


class ReplicaLostMiddleware:
    """Pure ASGI around Ray's proxy: a 503 JSON error when the proxy produced no response at all."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("proxy failed before answering %s", scope.get("path"))
        if not started:
            response = error_response(Request(scope), 503, "replica_unavailable", MESSAGE,
                                      headers={"Retry-After": str(RETRY_AFTER_S)})
            await response(scope, receive, send)


def middlewares() -> list[Middleware]:
    """Ray's proxy callback: the middlewares it wraps itself in."""
    return [Middleware(ReplicaLostMiddleware)]
