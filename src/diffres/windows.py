"""The window plan: how audio is cut for a model, in model-rate samples, and the cutters that follow it.

One home for the sizes (window, hop, long-audio threshold, frame hop) and for cutting, so the
pipeline (uploads, streams, the Python API), the load test's in-process baseline and the
benchmarks window audio identically. A clip up to the long-audio threshold is one window: the
whole clip, whatever its length; longer audio is cut into windows of `window` samples every `hop`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from diffres.contract import MAX_WORD_S, ModelInfo
from diffres.decode import AudioStream

Cut = tuple[int, np.ndarray]  # a window: its start (model-rate samples) and its samples

LONG_AUDIO_CLIPS = 3  # default: audio longer than 3 training clips is windowed


@dataclass(frozen=True)
class WindowPlan:
    """Window sizes in samples at the model's rate; the hop is a whole number of frames."""

    window: int
    hop: int
    long_threshold: int  # longer audio is windowed
    frame_hop: int  # samples per spectrogram frame (importance grid)
    min_duration_s: float
    event_windows: int = 1  # consecutive windows a label must hold to make an event (diffres/events.py)
    max_word_s: float = MAX_WORD_S  # an event's onset is searched at most this far before its end (same)

    @classmethod
    def for_model(cls, info: ModelInfo, *, window_s: float | None = None, window_hop_s: float | None = None,
                  long_audio_s: float | None = None, min_duration_s: float | None = None,
                  event_windows: int | None = None) -> WindowPlan:
        """Unset sizes follow the model: window = clip_seconds, hop, event windows and onset search as chosen on
        validation (window_hop_s, event_windows, max_word_s), long = 3 clips, shortest audio = one analysis
        window."""
        sr, frame_hop = info.sample_rate, info.hop
        window_s = window_s or info.clip_seconds
        window = max(frame_hop, round(window_s * sr))
        # A whole number of frames, so the windows' importance curves line up on one grid.
        hop_s = window_hop_s or info.window_hop_s or window_s / 2
        hop = min(window, max(frame_hop, round(hop_s * sr / frame_hop) * frame_hop))
        long_s = long_audio_s or LONG_AUDIO_CLIPS * info.clip_seconds
        min_s = min_duration_s if min_duration_s is not None else info.win_ms / 1000
        return cls(window=window, hop=hop, long_threshold=max(window, round(long_s * sr)),
                   frame_hop=frame_hop, min_duration_s=min_s, event_windows=event_windows or info.event_windows,
                   max_word_s=info.max_word_s)

    def is_long(self, samples: int) -> bool:
        return samples > self.long_threshold


class WindowCutter:
    """Cuts a stream into fixed-length windows at a fixed hop; the last one is aligned to the end.

    Holds at most one window plus one pushed block. Every sample is covered; the end-aligned last
    window overlaps its predecessor more than the others instead of being zero-padded.
    """

    def __init__(self, window: int, hop: int) -> None:
        if not 0 < hop <= window:
            raise ValueError("need 0 < hop <= window")
        self.window, self.hop = window, hop
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # absolute index of _buf[0]
        self._next = 0  # start of the next full window
        self._covered = 0  # end of the last emitted window
        self.total = 0

    def push(self, samples: np.ndarray) -> list[Cut]:
        self._buf = np.concatenate([self._buf, samples.astype(np.float32, copy=False)])
        self.total += len(samples)
        out = []
        while self._next + self.window <= self.total:
            offset = self._next - self._buf_start
            out.append((self._next, self._buf[offset:offset + self.window].copy()))
            self._covered = self._next + self.window
            self._next += self.hop
        keep_from = max(0, min(self._next, self.total - self.window))
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:]
            self._buf_start = keep_from
        return out

    def finish(self) -> list[Cut]:
        if self._covered >= self.total or self.total == 0:
            return []
        start = max(0, self.total - self.window)
        self._covered = self.total
        return [(start, self._buf[start - self._buf_start:].copy())]


class ClipReader:
    """The plan's windows of a decoding stream, without knowing its length up front.

    Buffers up to `long_threshold` samples: audio that ends within it is one window, the whole
    clip; longer audio switches to windows (`window` samples every `hop`), handed out at most
    `max_windows` at a time. Holds only the buffered head, or the windows not yet handed out.
    """

    def __init__(self, stream: AudioStream, plan: WindowPlan) -> None:
        self.stream = stream
        self._cutter = WindowCutter(plan.window, plan.hop)
        self._long_threshold = plan.long_threshold
        self._head: list[np.ndarray] = []
        self._head_len = 0
        self._ready: deque[Cut] = deque()
        self.windowed = False
        self.finished = False

    @property
    def total_samples(self) -> int:
        return self._cutter.total if self.windowed else self._head_len

    def next(self, max_windows: int) -> list[Cut]:
        """The next windows (at most `max_windows`); an empty list once the audio is over."""
        if not self.windowed and not self.finished:
            while self._head_len <= self._long_threshold:
                block = self.stream.read()
                if block is None:
                    self.finished = True
                    whole = np.concatenate(self._head) if self._head else np.zeros(0, np.float32)
                    return [(0, whole)]
                self._head.append(block)
                self._head_len += len(block)
            self.windowed = True
            self._ready.extend(self._cutter.push(np.concatenate(self._head)))
            self._head = []
        while len(self._ready) < max_windows and not self.finished:
            block = self.stream.read()
            if block is None:
                self.finished = True
                self._ready.extend(self._cutter.finish())
            else:
                self._ready.extend(self._cutter.push(block))
        return [self._ready.popleft() for _ in range(min(max_windows, len(self._ready)))]
