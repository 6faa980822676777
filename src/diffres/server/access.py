"""Who may call the API: CORS for browser apps on other origins, API keys for /v1 and /v2. Both off by default.

WebSockets under /v1 (the live stream) need the key in the same headers, or are refused at the
handshake.

Keys are compared in constant time and never logged (the access log records the path, not headers
or the query string). Probes stay open so orchestrators need no key; /metrics has its own setting.
The key check is pure ASGI, so upload bodies keep streaming; it answers 401 before a byte is read.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from diffres.server.config import Settings
from diffres.server.errors import error_response

PROTECTED_PREFIXES = ("/v1/", "/v2/")
OPEN_PATHS = ("/v2/health/",)  # liveness and readiness of the OIP protocol: probes
METRICS = "/metrics"
KEY_HEADERS = ("authorization", "x-api-key")
CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"]
WS_POLICY_VIOLATION = 1008


def presented_key(scope: Scope) -> str | None:
    """The key a request carries: `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", [])
               if name.decode("latin-1") in KEY_HEADERS}
    if "x-api-key" in headers:
        return headers["x-api-key"].strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ApiKeyMiddleware:
    """401 with a JSON error for a protected path without a valid key."""

    def __init__(self, app: ASGIApp, keys: list[bytes], protect_metrics: bool) -> None:
        self.app = app
        self._digests = [hashlib.sha256(k).digest() for k in keys]  # equal lengths: nothing leaks by timing
        self.protect_metrics = protect_metrics

    def protects(self, path: str) -> bool:
        if path == METRICS:
            return self.protect_metrics
        return path.startswith(PROTECTED_PREFIXES) and not path.startswith(OPEN_PATHS)

    def accepts(self, key: str | None) -> bool:
        if key is None:
            return False
        given = hashlib.sha256(key.encode()).digest()
        # Every key is compared, so the time taken says nothing about which one nearly matched.
        return sum(hmac.compare_digest(given, d) for d in self._digests) > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.protects(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        if self.accepts(key):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused at the handshake (HTTP 403), before the app accepts
            await receive()
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": "API key missing or not valid"})
            return
        message = ("this API needs a key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`" if key is None
                   else "the API key is not valid")
        response = error_response(Request(scope), 401, "unauthorized", message,
                                  headers={"WWW-Authenticate": 'Bearer realm="diffres"'})
        await response(scope, receive, send)


def install_api_keys(app: FastAPI, settings: Settings) -> None:
    """Add the key check when keys are configured (add it inside the request-id/logging middleware)."""
    keys = [k.get_secret_value().encode() for k in settings.api_keys if k.get_secret_value()]
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys, protect_metrics=settings.metrics_require_key)


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Add CORS when origins are configured (outermost, so preflights and 401s carry its headers)."""
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=CORS_HEADERS, expose_headers=["X-Request-ID", "Retry-After"], max_age=600)
