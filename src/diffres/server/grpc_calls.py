"""The frame of every gRPC call: API key, request id, metrics and access log, errors as gRPC status codes.

What ApiKeyMiddleware and RequestContextMiddleware do for HTTP, done for the calls of
inference.GRPCInferenceService (server/grpc_service.py) with the same code wherever it can be
shared, so both doors behave alike:
- API keys (DIFFRES_API_KEYS): metadata `authorization: Bearer KEY` or `x-api-key: KEY`, checked by
  server/access.py's own constant-time comparison. ServerLive, ServerReady and ServerMetadata stay
  open, as /v2/health/* and /v2 do over HTTP; everything else answers UNAUTHENTICATED without one.
  RepositoryModelLoad and RepositoryModelUnload are for admins (server/access.py's AdminAccess, as
  over HTTP): UNAUTHENTICATED without a key, PERMISSION_DENIED with another key or when control is off.
- Request id: metadata `x-request-id` when it is a sane token (server/middleware.py's rule), else a
  fresh one; in the logs' context while the call runs, and sent back as trailing metadata.
- Metrics and the access log: `record_access`, with method `GRPC`, route
  `grpc:/inference.GRPCInferenceService/<Method>` and the gRPC code name as status.
- Errors: every DiffresError becomes a status code with its message (`STATUS`); overload and
  not-ready also say when to retry, in the message and as trailing metadata `retry-after`, and
  every error carries the service's stable error code as trailing metadata `diffres-error-code`.

The context may be grpc.aio's or Ray Serve's RayServegRPCContext (server/ray_serve.py): only the
methods both have are used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import grpc

from diffres.errors import DiffresError, Overloaded, Unauthorized, Unavailable
from diffres.server.access import AdminAccess, KeySet, api_keys, presented_key
from diffres.server.config import Settings
from diffres.server.logs import request_id_var
from diffres.server.metrics import Metrics
from diffres.server.middleware import Access, record_access, request_id_from

log = logging.getLogger("diffres.server.grpc")
SERVICE = "inference.GRPCInferenceService"
OPEN_METHODS = frozenset({"ServerLive", "ServerReady", "ServerMetadata"})  # as /v2/health/* and /v2 over HTTP
ADMIN_METHODS = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})  # as /v2/repository/models/*/load
UNTRACKED = frozenset({"ServerLive", "ServerReady"})  # probes: not in the in-progress gauge, as over HTTP
METHOD = "GRPC"  # the access log's and metrics' method label for gRPC calls
STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
          413: grpc.StatusCode.INVALID_ARGUMENT, 415: grpc.StatusCode.INVALID_ARGUMENT,
          422: grpc.StatusCode.INVALID_ARGUMENT, 501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE}


class CallContext(Protocol):
    """What grpc.aio's ServicerContext and Ray Serve's RayServegRPCContext both offer."""

    def invocation_metadata(self) -> Any: ...

    def peer(self) -> str: ...

    def set_code(self, code: grpc.StatusCode) -> None: ...

    def set_details(self, details: str) -> None: ...

    def set_trailing_metadata(self, trailing_metadata: Any) -> None: ...


def route(method: str) -> str:
    return f"grpc:/{SERVICE}/{method}"


def metadata_of(context: CallContext) -> dict[str, str]:
    """Text metadata by (lower-case) key; binary `-bin` entries are never keys or ids."""
    return {key.lower(): value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def as_scope(metadata: Mapping[str, str]) -> dict[str, Any]:
    """Metadata as the ASGI headers the HTTP helpers read (presented_key, request_id_from)."""
    return {"headers": [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for k, v in metadata.items()]}


def client_of(peer: str) -> str | None:
    """The client's address from gRPC's peer string (`ipv4:10.0.0.1:5000`, `ipv6:[::1]:5000`)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6") or not rest:
        return peer or None
    return rest.rsplit(":", 1)[0].strip("[]")


@dataclass(frozen=True)
class Failure:
    """How a call failed: its status code, the message for the client, and trailing metadata."""

    code: grpc.StatusCode
    message: str
    trailing: tuple[tuple[str, str], ...] = ()


def failure_of(exc: Exception, request_id: str) -> Failure:
    """The status for an exception: DiffresErrors by kind (overload: RESOURCE_EXHAUSTED; not ready or
    shutting down: UNAVAILABLE; both with retry advice), anything else INTERNAL with the request id."""
    if not isinstance(exc, DiffresError):
        return Failure(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})",
                       (("diffres-error-code", "internal_error"),))
    trailing = [("diffres-error-code", exc.code)]
    message = exc.message
    retry_after = exc.headers.get("Retry-After")
    if isinstance(exc, Unavailable) and retry_after is not None:
        message += f" (retry after {retry_after} s)"
        trailing.append(("retry-after", retry_after))
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, Overloaded) else STATUS.get(
        exc.status, grpc.StatusCode.INTERNAL)
    return Failure(code, message, tuple(trailing))


class Call:
    """One call (or one request of a stream) from start to end: `with call:` runs it; an error inside is
    turned into `failure` and suppressed (cancellation is recorded and re-raised); the exit records it."""

    def __init__(self, guard: CallGuard, method: str, metadata: Mapping[str, str], peer: str,
                 request_id: str | None = None) -> None:
        self.guard = guard
        self.method = method
        self.metadata = metadata
        self.client = client_of(peer)
        self.request_id = request_id or request_id_from(as_scope(metadata))
        self.failure: Failure | None = None
        self.outcome = "answered"
        self._started = time.perf_counter()
        self._tracked = method not in UNTRACKED
        self._token: Any = None

    def __enter__(self) -> Call:
        self._token = request_id_var.set(self.request_id)
        if self._tracked:
            self.guard.metrics.in_progress.inc()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        try:
            if isinstance(exc, Exception):
                if not isinstance(exc, DiffresError):
                    log.error("unhandled error in %s", self.method, exc_info=(kind, exc, tb))  # type: ignore[arg-type]
                self.failure = failure_of(exc, self.request_id)
            elif isinstance(exc, asyncio.CancelledError):
                self.outcome = "cancelled"  # the client went away, or the shutdown grace period ran out
            status = "CANCELLED" if self.outcome == "cancelled" else self.code.name
            record_access(self.guard.metrics, Access(route(self.method), METHOD, f"/{SERVICE}/{self.method}", status,
                                                     self.request_id, self.client, self.outcome),
                          time.perf_counter() - self._started, self._tracked)
        finally:
            request_id_var.reset(self._token)
        return isinstance(exc, Exception)

    @property
    def code(self) -> grpc.StatusCode:
        return self.failure.code if self.failure is not None else grpc.StatusCode.OK

    def authorize(self) -> None:
        """UNAUTHENTICATED unless the call is open or carries a valid key."""
        self.guard.authorize(self.method, self.metadata)

    def apply(self, context: CallContext) -> None:
        """The call's status and trailing metadata (the request id, and on failure its code and retry advice)."""
        trailing = [("x-request-id", self.request_id)]  # a list: Ray's context appends its own to it
        if self.failure is not None:
            context.set_code(self.failure.code)
            context.set_details(self.failure.message)
            trailing += self.failure.trailing
        context.set_trailing_metadata(trailing)


class CallGuard:
    """Opens calls with the app's settings and metrics; holds the key checks (server/access.py's)."""

    def __init__(self, settings: Settings, metrics: Metrics, admin: AdminAccess | None = None) -> None:
        self.metrics = metrics
        keys = api_keys(settings)
        self._keys = KeySet(keys) if keys else None
        self.admin = admin or AdminAccess(settings)

    def call(self, method: str, context: CallContext, request_id: str | None = None) -> Call:
        return Call(self, method, metadata_of(context), context.peer(), request_id)

    def allows(self, method: str, metadata: Mapping[str, str]) -> bool:
        """An open method, keys off, or a valid key in the metadata."""
        return self._keys is None or method in OPEN_METHODS or self._keys.accepts(presented_key(as_scope(metadata)))

    def authorize(self, method: str, metadata: Mapping[str, str]) -> None:
        key = presented_key(as_scope(metadata))
        if not self.allows(method, metadata):
            raise Unauthorized("this API needs a key: send metadata `authorization: Bearer KEY` or `x-api-key: KEY`"
                               if key is None else "the API key is not valid")
        if method in ADMIN_METHODS:
            self.admin.authorize(key)
