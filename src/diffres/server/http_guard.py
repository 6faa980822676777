"""Connection-level limits uvicorn lacks: a header deadline, a header size limit, a connection cap.

uvicorn holds a connection that never finishes its headers for ever (slowloris), takes headers
of any size with httptools, and accepts every connection. This subclass of its httptools protocol
closes a connection whose request line and headers take longer than `header_timeout_s` (408),
refuses headers over `max_header_bytes` (431) and answers connections beyond `max_connections`
with 503 at once; each answer is a short JSON error and the connection is closed. Bodies are the
middleware's business (server/middleware.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from diffres.server.config import Settings

REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def refusal(status: int, code: str, message: str, retry_after_s: int | None = None) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, with the service's JSON error body."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {REASONS[status]}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after_s is not None:
        head.append(f"retry-after: {retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's `http=` protocol class with this service's connection limits."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_bytes = 0
            self._in_headers = False
            self._refused = False
            self._header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > settings.max_connections:
                self._refuse(503, "too_many_connections", f"the server has {settings.max_connections} connections "
                             "open (DIFFRES_MAX_CONNECTIONS); retry later", settings.retry_after_s)
                return
            self._start_headers()

        def _start_headers(self) -> None:
            self._in_headers, self._header_bytes = True, 0
            self._cancel_timer()
            self._header_timer = self.loop.call_later(settings.header_timeout_s, self._header_deadline)

        def _cancel_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            if self._in_headers and not self.transport.is_closing():
                self._refuse(408, "header_timeout", f"request headers not complete within "
                             f"{settings.header_timeout_s:g} s (DIFFRES_HEADER_TIMEOUT_S)")

        def _refuse(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
            self._refused = True
            self._cancel_timer()
            self.logger.warning("connection refused: %s", message)
            if not self.transport.is_closing():
                self.transport.write(refusal(status, code, message, retry_after_s))
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if self._in_headers and self._header_bytes > settings.max_header_bytes and not self._refused:
                self._too_large()

        def _too_large(self) -> None:
            self._refuse(431, "headers_too_large", f"request line and headers exceed {settings.max_header_bytes} "
                         "bytes (DIFFRES_MAX_HEADER_BYTES)")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_headers:  # the next request on a kept-alive connection: a fresh deadline
                self._start_headers()

        def on_url(self, url: bytes) -> None:
            self._header_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_bytes += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._cancel_timer()
            if self._header_bytes > settings.max_header_bytes:
                self._refused = True  # refused after this feed; the request never reaches the app
                self.loop.call_soon(self._too_large_now)
                return
            super().on_headers_complete()

        def _too_large_now(self) -> None:
            self._refused = False
            self._too_large()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

    return GuardedHttpToolsProtocol


def __getattr__(name: str) -> Any:
    """`from_environment`: the guarded protocol for the settings in the environment (uvicorn's worker processes
    import their `http=` protocol by name: a class made inside a function cannot travel to them)."""
    if name == "from_environment":
        from diffres.server.config import get_settings

        return guarded_protocol(get_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
