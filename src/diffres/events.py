"""Sound events from classified windows: the decision rule, and where an event starts and ends.

Torch-free and stateful in one direction only (windows arrive in order). The pipeline
(diffres/pipeline.py) is its one user, so uploads, the WebSocket stream, the Python API and the
event evaluation turn the same windows into the same events.

Rules
- A window *supports* label L when L is not the background label, its probability reaches L's
  threshold (`min_score` from the model's metadata unless the request overrides it, per label if
  asked), and no other label reaching its threshold is more probable. A model without a background
  label works the same way.
- A *run* is consecutive windows supporting one label; its first window raises an *onset* notice (a
  candidate, for live use). The run makes an *event* once it holds `hold` windows (the model's
  `event_windows`; windows start `window_hop_s` apart; both chosen on validation data): the event
  is final at once, so a live stream learns of a word a few hops after it ends. A run still open
  when the audio ends makes its event too, as no later window can hold it: a clip that runs as one
  window makes its event that way.
- One word, one event: a run that goes on after its event adds nothing, and a run of the same label
  whose event would start less than `join_gap_s` after that label's last event ended is the same
  word seen again.
- Bounds come from the stretch that carries the label. A window supports a word once it holds all
  of it, and windows move forward, so the word ends between the end of the window before the run
  and the end of the run's first window: the event ends half a hop before that first window's end.
  Its onset is where the word's sound begins: on the run's first window, the last salient stretch
  reaching that end (`locate_last`) of the DiffRes importance curve (1 on the frames DiffRes keeps
  at full resolution), or of the log-mel energy when importance is flat (spread under
  IMPORTANCE_CONTRAST), searched back at most `max_word_s` (the model's, chosen on validation data:
  the longest word it expects, so speech just before the word is not taken for its start); on flat
  curves, `max_word_s` before the end. A run that starts on the audio's first window has no window
  before it to bound its end: both bounds are the most salient stretch of its curve (`locate`), else
  the window's bounds.
  tools/bench/events.py measures each choice.
- Memory: a run keeps one window's curves, so an endless stream never grows.
- Clip level: each label's best window probability ("what was detected"), and for the background
  label its lowest ("how sure that nothing is anywhere"), instead of a mean diluted by background.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from diffres.contract import MAX_WORD_S, ModelInfo
from diffres.errors import InvalidParameters
from diffres.schemas import Event

IMPORTANCE_CONTRAST = 0.15  # importance is 0-1: less spread than this says nothing
ENERGY_CONTRAST_DB = 6.0
JOIN_GAP_S = 0.5  # same-label events closer than this are one (nobody repeats a word within half a second)
MAX_GAP_S = 0.3  # quieter stretches inside a word up to this long do not split it


def parse_thresholds(text: str) -> dict[str, float]:
    """`label:score,label:score` (the query-string form) into a dict; InvalidParameters when malformed."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, sep, value = item.rpartition(":")
        if not sep or not label:
            raise InvalidParameters(f"threshold {item!r} is not label:score")
        try:
            out[label] = float(value)
        except ValueError:
            raise InvalidParameters(f"threshold {item!r}: {value!r} is not a number") from None
    return out


@dataclass(frozen=True)
class EventRules:
    """Per-label thresholds (background: never fires) for one model and one request."""

    labels: tuple[str, ...]
    thresholds: tuple[float, ...]
    background_index: int | None

    @classmethod
    def for_model(cls, info: ModelInfo, min_score: float | None = None,
                  per_label: Mapping[str, float] | None = None) -> EventRules:
        """The model's min_score (or the request's) for every label, overridden per label; InvalidParameters
        for a threshold outside [0, 1], an unknown label or the background label."""
        default = info.min_score if min_score is None else min_score
        per_label = dict(per_label or {})
        for label, value in [("min_score", default), *per_label.items()]:
            if not 0.0 <= value <= 1.0:
                raise InvalidParameters(f"threshold for {label} must be within [0, 1], got {value}")
        unknown = [x for x in per_label if x not in info.labels]
        if unknown:
            raise InvalidParameters(f"thresholds name unknown labels {unknown}; the model has {list(info.labels)}")
        if info.background_label and info.background_label in per_label:
            raise InvalidParameters(f"{info.background_label!r} is the background label: it never makes events")
        thresholds = tuple(per_label.get(x, default) for x in info.labels)
        return cls(info.labels, thresholds, info.background_index)

    def passes(self, index: int, probability: float) -> bool:
        """Whether label `index` at this probability reaches its threshold (the background label never does)."""
        return index != self.background_index and probability >= self.thresholds[index]

    def firing(self, probs: np.ndarray) -> int | None:
        """Index of the label this window fires for, or None."""
        candidates = [i for i, p in enumerate(probs) if self.passes(i, float(p))]
        return max(candidates, key=lambda i: probs[i]) if candidates else None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _salient_runs(curve: np.ndarray, min_contrast: float, max_gap: int,
                  smooth: int = 5) -> tuple[list[tuple[int, int]], float] | None:
    """[start, end) frames of the stretches standing out of `curve` (gaps up to max_gap bridged) and the
    curve's baseline; None when the curve is too flat to say."""
    if len(curve) < 3:
        return None
    width = min(smooth, len(curve))
    padded = np.pad(curve, (width // 2, width - 1 - width // 2), mode="edge")  # no zeros leaking in at the ends
    smoothed = np.convolve(padded, np.ones(width) / width, mode="valid")
    low, high = float(np.percentile(smoothed, 10)), float(smoothed.max())
    if high - low < min_contrast:
        return None
    runs = _runs(smoothed >= low + 0.5 * (high - low))
    merged = [runs[0]]
    for start, end in runs[1:]:
        if start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged, low


def locate(curve: np.ndarray, *, min_contrast: float, max_gap: int) -> tuple[int, int] | None:
    """[start, end) frames of the most salient stretch of `curve` (most of it above the baseline)."""
    found = _salient_runs(curve, min_contrast, max_gap)
    if found is None:
        return None
    runs, low = found
    excess = np.clip(curve - low, 0, None)
    return max(runs, key=lambda r: float(excess[r[0]:r[1]].sum()))


def locate_last(curve: np.ndarray, *, min_contrast: float, max_gap: int) -> tuple[int, int] | None:
    """[start, end) frames of the last salient stretch of `curve`: the one reaching furthest towards its end."""
    found = _salient_runs(curve, min_contrast, max_gap)
    return None if found is None else found[0][-1]


def frame_energy_db(logmel: np.ndarray) -> np.ndarray:
    """Per-frame energy in dB from the graph's log-mel [frames, n_mels] (log of mel power)."""
    return 10 * np.log10(np.mean(np.exp(logmel.astype(np.float64)), axis=1) + 1e-12)


CURVES = (("importance", IMPORTANCE_CONTRAST), ("energy", ENERGY_CONTRAST_DB))  # tried in this order


@dataclass
class _Run:
    """Consecutive windows supporting one label; the first window's curves place the event."""

    label: int
    start: int  # the first window's start, model-rate samples
    length: int
    opens_audio: bool  # the first window is the audio's first
    curves: dict[str, np.ndarray]
    windows: int = 0
    score: float = 0.0
    settled: bool = False  # its event was made (or joined an earlier one)


class EventTracker:
    """Feed classified windows in order (`add`), collect the events they settle, `finish` at the end.

    `hop` is the plan's hop (samples between window starts), `hold` the windows a label must hold.
    After each `add`, `onset` is the run that window started (window bounds), if any.
    """

    def __init__(self, rules: EventRules, *, sample_rate: int, frame_hop: int, hop: int, hold: int = 1,
                 max_word_s: float = MAX_WORD_S, join_gap_s: float = JOIN_GAP_S, max_gap_s: float = MAX_GAP_S) -> None:
        self.rules = rules
        self.sample_rate, self.frame_hop, self.hop, self.hold = sample_rate, frame_hop, hop, max(1, hold)
        self.max_word = round(max_word_s * sample_rate)
        self.join_gap = round(join_gap_s * sample_rate)
        self.max_gap = round(max_gap_s * sample_rate / frame_hop)
        self.run: _Run | None = None
        self.onset: Event | None = None
        self.last_end: dict[int, int] = {}  # per label, where its last event ended (samples)
        n = len(rules.labels)
        self.best = np.zeros(n)  # clip level: best window probability per label
        self.least = np.ones(n)  # and the lowest, for the background label
        self.windows = 0

    def add(self, start: int, length: int, probs: np.ndarray, importance: np.ndarray | None = None,
            energy_db: np.ndarray | None = None) -> list[Event]:
        """One window (start and length in model-rate samples, its softmax, its per-frame importance and
        energy); the events it settles."""
        self.windows += 1
        np.maximum(self.best, probs, out=self.best)
        np.minimum(self.least, probs, out=self.least)
        label = self.rules.firing(probs)
        self.onset = None
        if self.run is not None and self.run.label != label:
            self.run = None  # a run that did not hold long enough makes no event
        if label is None:
            return []
        if self.run is None:
            curves = {name: np.asarray(values, np.float64) for name, values in
                      (("importance", importance), ("energy", energy_db)) if values is not None}
            self.run = _Run(label, start, length, self.windows == 1, curves)
            sr = self.sample_rate
            self.onset = Event(label=self.rules.labels[label], start_s=start / sr, end_s=(start + length) / sr,
                               score=float(probs[label]))
        run = self.run
        run.windows += 1
        run.score = max(run.score, float(probs[label]))
        return self._settle(run) if run.windows >= self.hold and not run.settled else []

    def finish(self) -> list[Event]:
        """The audio is over: an open run that has not made its event makes it now."""
        run, self.run, self.onset = self.run, None, None
        return self._settle(run) if run is not None and not run.settled else []

    def _settle(self, run: _Run) -> list[Event]:
        run.settled = True
        start, end = self._bounds(run)
        last = self.last_end.get(run.label)
        if last is not None and start < last + self.join_gap:
            self.last_end[run.label] = max(last, end)  # the same word seen again
            return []
        self.last_end[run.label] = end
        sr = self.sample_rate
        return [Event(label=self.rules.labels[run.label], start_s=start / sr, end_s=end / sr, score=run.score)]

    def _bounds(self, run: _Run) -> tuple[int, int]:
        """[start, end) samples of the run's word (the module docstring says how)."""
        fh = self.frame_hop
        if run.opens_audio:
            found = self._on_curve(run.curves, 0, None, locate)
            if found is None:
                return run.start, run.start + run.length
            return run.start + found[0] * fh, min(run.start + run.length, run.start + found[1] * fh)
        end = max(run.start + 1, run.start + run.length - self.hop // 2)
        first = max(0, end - self.max_word - run.start) // fh
        found = self._on_curve(run.curves, first, -(-(end - run.start) // fh), locate_last)
        return (run.start + (first + found[0]) * fh if found is not None else max(run.start, end - self.max_word)), end

    def _on_curve(self, curves: dict[str, np.ndarray], lo: int, hi: int | None,
                  finder: Callable[..., tuple[int, int] | None]) -> tuple[int, int] | None:
        """`finder` on frames [lo, hi) of the first curve (in CURVES order) with enough contrast."""
        for name, contrast in CURVES:
            if name in curves:
                found = finder(curves[name][lo:hi], min_contrast=contrast, max_gap=self.max_gap)
                if found is not None:
                    return found
        return None

    def clip_scores(self) -> np.ndarray:
        """Per label: the best window's probability; for the background label the lowest."""
        scores = self.best.copy()
        if self.rules.background_index is not None and self.windows:
            scores[self.rules.background_index] = self.least[self.rules.background_index]
        return scores
