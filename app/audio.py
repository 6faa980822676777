"""The decoder lives in runtime/audio.py (one home, shared with training and the load test).

These names stay importable from here for the service modules that already use them; the errors
it raises are runtime.errors' domain errors, mapped to HTTP statuses in app/errors.py.
"""

from __future__ import annotations

from runtime.audio import (  # noqa: F401 - re-exported
    BLOCK_SAMPLES,
    MAX_ABS_SAMPLE,
    AudioInfo,
    AudioStream,
    ClipReader,
    Whole,
    WindowCutter,
    Windows,
    open_audio,
)
from runtime.contract import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE  # noqa: F401 - re-exported
