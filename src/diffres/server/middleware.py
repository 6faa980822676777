"""Request id, JSON access log, request metrics, client guard and last-resort answers, as one pure ASGI middleware.

Pure ASGI (not BaseHTTPMiddleware) so request bodies keep streaming and nothing is buffered.
What it guards, and why here (the one place that sees every request from start to end):
- a body that stalls for `body_timeout_s` between chunks gets 408 (a half-open upload holds no slot);
- once the body is in, a client that goes away cancels its request: queued windows leave the
  batcher within a call or two, and the request is logged as 499 (client closed), never 200;
- a request cut by the shutdown grace period gets a JSON 503 with Retry-After, not a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diffres.server.config import Settings
from diffres.server.demo import STATIC_URL
from diffres.server.docs import ASSETS_URL, PAGES
from diffres.errors import DiffresError
from diffres.server.logs import request_id_var
from diffres.server.metrics import Metrics

_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+
log = logging.getLogger("diffres.server.access")
REQUEST_ID = "X-Request-ID"
CLIENT_CLOSED = 499  # nginx's "client closed request": the work was cancelled, nobody got an answer
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
UNTRACKED = frozenset({"/metrics", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
STATIC_FOLDERS = (STATIC_URL, ASSETS_URL)


def route_name(scope: Scope) -> str:
    """The route's template for metrics and logs: an API route's path, a page or static folder, else `unmatched`."""
    route = getattr(scope.get("route"), "path", None)
    if route:
        return route
    path = scope["path"]
    if path in PAGES:
        return path
    folder = next((f for f in STATIC_FOLDERS if path.startswith(f + "/")), None)
    return f"{folder}/{{file}}" if folder else "unmatched"


class BodyTimeout(DiffresError):
    status, code = 408, "body_timeout"


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one (never echo arbitrary bytes)."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


class ClientGuard:
    """Wraps `receive`: a timeout between body chunks, then a watcher that cancels the request's task
    when the client disconnects before the response is complete."""

    def __init__(self, receive: Receive, body_timeout_s: float) -> None:
        self._receive = receive
        self._body_timeout_s = body_timeout_s
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self.body_done = False
        self.response_done = False
        self.disconnected = False

    async def receive(self) -> Message:
        if self.body_done:
            return await self._receive()
        try:
            if _timeout is not None:  # a deadline on this task: no task of its own per chunk, as wait_for makes
                async with _timeout(self._body_timeout_s):
                    message = await self._receive()
            else:
                message = await asyncio.wait_for(self._receive(), self._body_timeout_s)
        except asyncio.TimeoutError:
            raise BodyTimeout(f"no request body data for {self._body_timeout_s:g} s "
                              "(DIFFRES_BODY_TIMEOUT_S)") from None
        if message["type"] == "http.disconnect":
            self.disconnected = True
        elif not message.get("more_body", False):
            self.body_done = True
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="client-watch")
        return message

    async def _watch(self) -> None:
        """After the body, the next message can only be the disconnect (or the end of the response)."""
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self.response_done and self._task is not None:
            self.disconnected = True
            self._task.cancel(msg="client disconnected")

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, settings: Settings | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.settings = settings or Settings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        guard = ClientGuard(receive, self.settings.body_timeout_s)
        status = 500
        response_started = False
        outcome = "answered"

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID] = request_id
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                guard.response_done = True
            await send(message)

        tracked = scope["path"] not in UNTRACKED
        if tracked:
            self.metrics.in_progress.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, guard.receive, send_with_id)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # handled here: the request ends now, with the right answer
            if guard.disconnected:
                outcome = "client_disconnected"
            else:  # uvicorn cancels what is left when the shutdown grace period ends
                outcome = "cut_by_shutdown"
                if not response_started:
                    await self._unavailable(scope, send_with_id, request_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not response_started:
                body = {"error": {"code": "internal_error", "message": f"internal error (request id {request_id})"}}
                await JSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            guard.stop()
            if guard.disconnected and not guard.response_done:
                status, outcome = CLIENT_CLOSED, "client_disconnected"
            elapsed = time.perf_counter() - started
            self._record(scope, status, elapsed, tracked, request_id, outcome)
            request_id_var.reset(token)

    async def _unavailable(self, scope: Scope, send: Send, request_id: str) -> None:
        """JSON 503 + Retry-After for a request the shutdown grace period cut off."""
        message = f"server shutting down; request {request_id} was not finished, retry"
        oip = scope["path"].startswith("/v2")
        body = {"error": message, "code": "shutting_down"} if oip else {
            "error": {"code": "shutting_down", "message": message}}
        response = JSONResponse(body, status_code=503, headers={"Retry-After": str(self.settings.retry_after_s),
                                                                "Connection": "close"})
        try:
            await response(scope, _no_body, send)
        except Exception:  # the connection may already be gone
            log.debug("could not send the shutdown 503", exc_info=True)

    def _record(self, scope: Scope, status: int, elapsed: float, tracked: bool, request_id: str,
                outcome: str) -> None:
        client = scope.get("client")
        record_access(self.metrics, Access(route_name(scope), scope["method"], scope["path"], status, request_id,
                                           client[0] if client else None, outcome), elapsed, tracked)


@dataclass(frozen=True)
class Access:
    """One request or call as the access log and the request metrics see it (HTTP, or gRPC: method `GRPC`,
    route `grpc:/<service>/<method>`, status the gRPC code name)."""

    route: str
    method: str
    path: str
    status: int | str
    request_id: str
    client: str | None
    outcome: str = "answered"


def record_access(metrics: Metrics, access: Access, elapsed: float, tracked: bool) -> None:
    """Count it, time it, end its in-progress mark, and write its access log line (one home for both doors)."""
    metrics.child(metrics.requests, access.route, access.method, str(access.status)).inc()
    metrics.child(metrics.latency, access.route, access.method).observe(elapsed)
    if tracked:
        metrics.in_progress.dec()
    fields = {"request_id": access.request_id, "method": access.method, "path": access.path, "route": access.route,
              "status": access.status, "duration_ms": round(elapsed * 1000, 3), "client": access.client}
    if access.outcome != "answered":
        fields["outcome"] = access.outcome
    level = logging.WARNING if access.outcome != "answered" else logging.INFO
    log.log(level, "%s %s %s%s", access.method, access.path, access.status,
            "" if access.outcome == "answered" else f" ({access.outcome.replace('_', ' ')})", extra={"fields": fields})


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
