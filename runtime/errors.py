"""Domain errors of the runtime core: what is wrong with the audio, never how to answer it over HTTP.

Every error carries a stable machine `code` (clients and logs branch on it) and a human message.
The service maps each class to a status in one place (app/errors.py); training and the load test
just let them propagate, so a file the service would refuse is refused there too.
"""

from __future__ import annotations


class AudioError(ValueError):
    """The audio cannot be used as it is; `code` names the reason."""

    code: str = "invalid_audio"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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

    code = "audio_too_long"


class AudioTooShort(AudioError):
    """Shorter than one analysis window of the model."""

    code = "audio_too_short"
