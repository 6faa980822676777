"""The window plan: how long audio is cut for a model, in model-rate samples.

One home for the sizes (window, hop, long-audio threshold, frame hop), so the service, the load
test's in-process baseline and the benchmarks window audio identically.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.contract import ModelInfo

LONG_AUDIO_CLIPS = 3  # default: audio longer than 3 training clips is windowed


@dataclass(frozen=True)
class WindowPlan:
    """Window sizes in samples at the model's rate; the hop is a whole number of frames."""

    window: int
    hop: int
    long_threshold: int  # longer audio is windowed
    frame_hop: int  # samples per spectrogram frame (importance grid)
    min_duration_s: float

    @classmethod
    def for_model(cls, info: ModelInfo, *, window_s: float | None = None, window_hop_s: float | None = None,
                  long_audio_s: float | None = None, min_duration_s: float | None = None) -> WindowPlan:
        """Unset sizes follow the model: window = clip_seconds, hop = half of it, long = 3 clips,
        shortest audio = one analysis window."""
        sr, frame_hop = info.sample_rate, info.hop
        window_s = window_s or info.clip_seconds
        window = max(frame_hop, round(window_s * sr))
        # A whole number of frames, so the windows' importance curves line up on one grid.
        hop_s = window_hop_s or window_s / 2
        hop = min(window, max(frame_hop, round(hop_s * sr / frame_hop) * frame_hop))
        long_s = long_audio_s or LONG_AUDIO_CLIPS * info.clip_seconds
        min_s = min_duration_s if min_duration_s is not None else info.win_ms / 1000
        return cls(window=window, hop=hop, long_threshold=max(window, round(long_s * sr)),
                   frame_hop=frame_hop, min_duration_s=min_s)

    def is_long(self, samples: int) -> bool:
        return samples > self.long_threshold
