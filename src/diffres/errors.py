"""Every error diffres raises on purpose: a stable machine `code`, a human `message`, an HTTP `status`.

One set of classes for all three doors: the Python API raises them, the service answers with their
status and `{"error": {"code", "message"}}`, and `diffres.Client` turns such an answer back into
the same class (`error_for`), so `except diffres.errors.AudioTooLong` works in-process and remote.
"""

from __future__ import annotations


class DiffresError(Exception):
    """Base class: `code` is what programs branch on, `message` is for people."""

    code: str = "error"
    status: int = 500  # the HTTP status the service answers with

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(DiffresError):
    """Something about the request is wrong (the generic 400)."""

    code, status = "bad_request", 400


class AudioError(BadRequest, ValueError):
    """The audio cannot be used as it is; `code` names the reason."""

    code = "invalid_audio"


class UndecodableAudio(AudioError):
    """Not audio in a format we read, or damaged beyond decoding."""

    code = "invalid_audio"


class TruncatedAudio(AudioError):
    """The file ends before its own header or index says it does: refuse, never classify a prefix."""

    code = "truncated_audio"


class EmptyAudio(AudioError):
    """A valid container with no samples in it."""

    code = "empty_audio"


class NonFiniteAudio(AudioError):
    """NaN or Inf samples (float formats): the spectrum would be NaN."""

    code = "non_finite_audio"


class OutOfRangeAudio(AudioError):
    """Float samples so large that the model's float32 spectrum would overflow."""

    code = "out_of_range_audio"


class UnsupportedSampleRate(AudioError):
    """A sample rate outside what resampling is accepted for."""

    code = "unsupported_sample_rate"


class AudioTooLong(AudioError):
    """Longer than the configured limit; found while decoding, never by trusting a header."""

    code, status = "audio_too_long", 413


class AudioTooShort(AudioError):
    """Shorter than one analysis window of the model."""

    code = "audio_too_short"


class Unauthorized(DiffresError):
    """The service needs an API key, or the key sent is not valid."""

    code, status = "unauthorized", 401


class NotFound(DiffresError, LookupError):
    """No such route or resource."""

    code, status = "not_found", 404


class ModelNotFound(NotFound):
    """No model of that name (shipped, in the model folder, or loaded by the service)."""

    code = "model_not_found"


class PayloadTooLarge(DiffresError):
    """A request body, file or tensor row over its limit (the message names the setting)."""

    code, status = "payload_too_large", 413


class UnsupportedMediaType(DiffresError):
    """A content type the route does not take."""

    code, status = "unsupported_media_type", 415


class InvalidParameters(DiffresError, ValueError):
    """Options that cannot be used: unknown labels in thresholds, out-of-range values."""

    code, status = "invalid_parameters", 422


class Unavailable(DiffresError):
    """Not ready yet, or shutting down: try again after `Retry-After` seconds."""

    code, status = "not_ready", 503


class Overloaded(Unavailable):
    """At capacity: the request was refused before any work was done; try again later."""

    code = "overloaded"


def _subclasses(cls: type[DiffresError]) -> list[type[DiffresError]]:
    return [cls] + [s for sub in cls.__subclasses__() for s in _subclasses(sub)]


BY_STATUS: dict[int, type[DiffresError]] = {
    400: BadRequest, 401: Unauthorized, 404: NotFound, 413: PayloadTooLarge, 415: UnsupportedMediaType,
    422: InvalidParameters, 503: Unavailable}


def error_for(status: int | None, code: str, message: str, headers: dict[str, str] | None = None) -> DiffresError:
    """The exception for a service's error answer: the most specific class of that code, else of that
    status; `status` None: the class's own."""
    by_code = [c for c in _subclasses(DiffresError) if c.code == code]
    cls = by_code[-1] if by_code else BY_STATUS.get(status or 0, DiffresError)
    return cls(message, code=code, status=status, headers=headers)
