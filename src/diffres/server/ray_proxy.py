"""Ray's HTTP proxy, made to answer like the plain service: one X-Request-ID, a clear 503 on a dead replica.

Loaded into the proxy through Ray's hook
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=diffres.server.ray_proxy:middlewares`
(server/ray_main.py sets it; the RayService manifest too):
- Ray's proxy sends nothing when the replica handling a request dies (its uvicorn then writes a bare
  `500 Internal Server Error`); such requests get the service's own error shape instead: 503
  `replica_unavailable` with Retry-After, which clients already retry.
- Ray's proxy appends its own X-Request-ID to the replica's (the same id, which it forwarded): the
  response keeps one, the service's.
Everything else the replica answered passes through untouched.
"""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffres.server.errors import error_response
from diffres.server.middleware import REQUEST_ID

log = logging.getLogger(__name__)
CALLBACK = "diffres.server.ray_proxy:middlewares"
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


class SingleRequestIdMiddleware:
    """Pure ASGI around Ray's proxy: keep the first X-Request-ID of a response (the replica's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def deduplicating_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                ids = headers.getlist(REQUEST_ID)
                if len(ids) > 1:
                    del headers[REQUEST_ID]
                    headers.append(REQUEST_ID, ids[0])
            await send(message)

        await self.app(scope, receive, deduplicating_send)


def middlewares() -> list[Middleware]:
    """Ray's proxy callback: the middlewares it wraps itself in (outermost last)."""
    return [Middleware(SingleRequestIdMiddleware), Middleware(ReplicaLostMiddleware)]
