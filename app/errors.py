"""One error shape for every failure: `{"error": {"code", "message"}}` (OIP routes: `{"error": "message"}`).

Clients branch on `code`; `message` is for humans. FastAPI's own validation and routing errors are
rewritten to the same shape so no client ever sees two formats.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtime.errors import AudioError, AudioTooLong, AudioTooShort

log = logging.getLogger("app.errors")

OIP_PREFIX = "/v2"


class ApiError(Exception):
    """An error a client caused or must know about; carries its HTTP status and stable code."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class BadAudio(ApiError):
    status, code = 400, "invalid_audio"


class NotFound(ApiError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidParameters(ApiError):
    status, code = 422, "invalid_parameters"


class Unavailable(ApiError):
    status, code = 503, "not_ready"


class Overloaded(Unavailable):
    code = "overloaded"


# The decoder's domain errors -> HTTP: what is too long is 413 like an oversized upload, the rest 400.
AUDIO_STATUS: dict[type[AudioError], int] = {AudioTooLong: 413}
# Which setting moves the limit the client ran into.
AUDIO_HINT: dict[type[AudioError], str] = {
    AudioTooLong: " (DIFFRES_MAX_DURATION_S)",
    AudioTooShort: " (DIFFRES_MIN_DURATION_S; default: one analysis window of the model)",
}


def api_error(exc: ApiError | AudioError) -> ApiError:
    """The one mapping of runtime errors to HTTP errors (the batch route reports them per file too)."""
    if isinstance(exc, ApiError):
        return exc
    kind = type(exc)
    status = next((s for k, s in AUDIO_STATUS.items() if issubclass(kind, k)), 400)
    hint = next((h for k, h in AUDIO_HINT.items() if issubclass(kind, k)), "")
    return ApiError(exc.message + hint, code=exc.code, status=status)


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


def _describe(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "header")]
        details.append({"field": ".".join(loc) or None, "message": err.get("msg", "invalid")})
    message = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details)
    return message or "invalid parameters", details


STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception type a request can raise to the one JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(AudioError)
    async def _audio_error(request: Request, exc: AudioError) -> JSONResponse:
        mapped = api_error(exc)
        return error_response(request, mapped.status, mapped.code, mapped.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _describe(list(exc.errors()))
        return error_response(request, 422, InvalidParameters.code, message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))
