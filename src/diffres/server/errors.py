"""One error shape for every failure: `{"error": {"code", "message"}}` (OIP routes: `{"error": "message"}`).

The errors themselves are diffres.errors' classes, each with its status and stable code; clients
branch on `code`, `message` is for humans. FastAPI's own validation and routing errors are
rewritten to the same shape so no client ever sees two formats.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from diffres.errors import AudioTooLong, AudioTooShort, DiffresError, InvalidParameters

log = logging.getLogger(__name__)

OIP_PREFIX = "/v2"

# Which setting moves the limit the client ran into.
SETTING_HINTS: dict[type[DiffresError], str] = {
    AudioTooLong: " (DIFFRES_MAX_DURATION_S)",
    AudioTooShort: " (DIFFRES_MIN_DURATION_S; default: one analysis window of the model)",
}


def public(exc: DiffresError) -> DiffresError:
    """The error as the service answers it: the message names the setting behind a limit."""
    hint = next((h for kind, h in SETTING_HINTS.items() if isinstance(exc, kind)), "")
    if not hint or exc.message.endswith(hint):
        return exc
    return type(exc)(exc.message + hint, code=exc.code, status=exc.status, headers=exc.headers)


def error_response(request: Request, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    """Render an error; the OIP routes get the protocol's `{"error": "<message>"}` with the code beside it."""
    if request.url.path.startswith(OIP_PREFIX):
        content: dict[str, Any] = {"error": message, "code": code}
    else:
        content = {"error": {"code": code, "message": message}}
        if details:
            content["error"]["details"] = details
    return JSONResponse(content, status_code=status, headers=headers)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """pydantic's errors as one readable line, and as `details` (field, message)."""
    details = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "header")]
        details.append({"field": ".".join(loc) or None, "message": err.get("msg", "invalid")})
    message = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details)
    return message or "invalid parameters", details


STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type a request can raise to the one JSON error shape."""

    @app.exception_handler(DiffresError)
    async def _diffres_error(request: Request, exc: DiffresError) -> JSONResponse:
        err = public(exc)
        return error_response(request, err.status, err.code, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = validation_message(list(exc.errors()))
        return error_response(request, 422, InvalidParameters.code, message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))
