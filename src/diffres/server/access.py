"""Who may call the API: CORS for browser apps on other origins, API keys for /v1 and /v2. Both off by default.
Who may change the models: admin keys (or, on a loopback-only server, anyone when enabled).

WebSockets under /v1 (the live stream) need the key in the same headers, or are refused at the
handshake. Loading and unloading models (the repository API, HTTP and gRPC) is for admins only:
refused unless DIFFRES_ADMIN_KEYS is set (an admin key is also an API key) or DIFFRES_ADMIN_LOOPBACK
is on, which the settings only accept for a server bound to loopback.

Keys are compared in constant time and never logged (the access log records the path, not headers
or the query string). Probes stay open so orchestrators need no key; /metrics has its own setting.
The key check is pure ASGI, so upload bodies keep streaming; it answers 401 before a byte is read.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from diffres.errors import DiffresError, Unauthorized
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


class Forbidden(DiffresError):
    """A caller this operation is not for (a key, but not an admin key; or repository control off)."""

    code, status = "forbidden", 403


class KeySet:
    """Keys compared in constant time (as digests: equal lengths, nothing leaks by timing)."""

    def __init__(self, keys: list[bytes]) -> None:
        self._digests = [hashlib.sha256(k).digest() for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, key: str | None) -> bool:
        if key is None:
            return False
        given = hashlib.sha256(key.encode()).digest()
        # Every key is compared, so the time taken says nothing about which one nearly matched.
        return sum(hmac.compare_digest(given, d) for d in self._digests) > 0


def secret_keys(*groups: list[SecretStr]) -> list[bytes]:
    return [k.get_secret_value().encode() for group in groups for k in group if k.get_secret_value()]


def api_keys(settings: Settings) -> list[bytes]:
    """The keys that open /v1 and /v2 when API keys are on: the API keys and the admin keys."""
    return secret_keys(settings.api_keys, settings.admin_keys) if secret_keys(settings.api_keys) else []


class AdminAccess:
    """Who may load and unload models: holders of an admin key; without admin keys, anyone when
    DIFFRES_ADMIN_LOOPBACK is on (a loopback-only server); nobody otherwise. `refuse_all` turns it off
    with a reason (Ray Serve: a call reaches one replica only)."""

    def __init__(self, settings: Settings) -> None:
        self._keys = KeySet(secret_keys(settings.admin_keys))
        self._loopback = settings.admin_loopback
        self.off_reason: str | None = None

    def refuse_all(self, reason: str) -> None:
        self.off_reason = reason

    def authorize(self, key: str | None) -> None:
        """401 without a key where one is needed, 403 for a key that is not an admin key or when it is off."""
        if self.off_reason is not None:
            raise Forbidden(self.off_reason)
        if self._keys:
            if key is None:
                raise Unauthorized("loading and unloading models needs an admin key (DIFFRES_ADMIN_KEYS): send "
                                   "`Authorization: Bearer KEY` or `X-API-Key: KEY`",
                                   headers={"WWW-Authenticate": 'Bearer realm="diffres"'})
            if not self._keys.accepts(key):
                raise Forbidden("this key may not load or unload models (only DIFFRES_ADMIN_KEYS may)")
            return
        if not self._loopback:
            raise Forbidden("loading and unloading models is off: set DIFFRES_ADMIN_KEYS, or "
                            "DIFFRES_ADMIN_LOOPBACK=true on a server bound to loopback")


class ApiKeyMiddleware:
    """401 with a JSON error for a protected path without a valid key."""

    def __init__(self, app: ASGIApp, keys: list[bytes], protect_metrics: bool) -> None:
        self.app = app
        self._keys = KeySet(keys)
        self.protect_metrics = protect_metrics

    def protects(self, path: str) -> bool:
        if path == METRICS:
            return self.protect_metrics
        return path.startswith(PROTECTED_PREFIXES) and not path.startswith(OPEN_PATHS)

    def accepts(self, key: str | None) -> bool:
        return self._keys.accepts(key)

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
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION,
                        "reason": "API key missing or not valid"})
            return
        message = ("this API needs a key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`" if key is None
                   else "the API key is not valid")
        response = error_response(Request(scope), 401, "unauthorized", message,
                                  headers={"WWW-Authenticate": 'Bearer realm="diffres"'})
        await response(scope, receive, send)


def install_api_keys(app: FastAPI, settings: Settings) -> None:
    """Add the key check when keys are configured (add it inside the request-id/logging middleware)."""
    keys = api_keys(settings)
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys, protect_metrics=settings.metrics_require_key)


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Add CORS when origins are configured (outermost, so preflights and 401s carry its headers)."""
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=CORS_HEADERS, expose_headers=["X-Request-ID", "Retry-After"], max_age=600)
