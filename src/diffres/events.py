"""Sound events from classified windows: which windows fire, how they merge, where an event starts and ends.

Torch-free and stateful in one direction only (windows arrive in order). The pipeline
(diffres/pipeline.py) is its one user, so uploads, the WebSocket stream, the Python API and the
event evaluation turn the same windows into the same events.

Rules
- A window *fires* for label L when L is not the background label and its probability is at least
  L's threshold (`min_score` from the model's metadata unless the request overrides it, per label
  if asked); when several labels fire, the most probable wins. A model without a background label
  works the same way: every window whose top label reaches the threshold fires.
- Consecutive windows firing for the same label merge into one event; a window that does not fire,
  or fires for another label, closes it. An event's `score` is the best probability of its windows.
  A closed event that starts less than `join_gap_s` (0.5 s) after the previous one of the same
  label ends joins it (one word seen by two runs of windows, e.g. again by the end-aligned last
  window), so an event is only final once a window starting `join_gap_s` after its end is classified.
- Onset and offset: the union of the merged windows is seconds too wide (a window is a whole
  training clip, 3.1 s for keywords). Inside that span a per-frame curve, averaged where windows
  overlap, marks where the sound is. First choice: the DiffRes importance curve (1 on the frames
  DiffRes keeps at full resolution, low on silence). `locate` smooths the curve over 5 frames, keeps
  the frames above half way between its 10th percentile and its peak, bridges gaps shorter than
  `max_gap_s`, and takes the run holding the most of the curve above the baseline. A flat curve
  (spread under IMPORTANCE_CONTRAST) says nothing: a DiffRes that learnt near-uniform importance
  (activeness ~0) gives no onsets. Then the same rule on the frames' log-mel energy (spread of at
  least ENERGY_CONTRAST_DB), else the windows' bounds. tools/bench/events.py measures each choice alone.
- Memory: only the open event's curve is held, and an event longer than `max_event_windows`
  windows is closed and a new one opened, so an endless stream never grows.
- Clip level: each label's best window probability ("what was detected"), and for the background
  label its lowest ("how sure that nothing is anywhere"), instead of a mean diluted by background.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from diffres.contract import ModelInfo
from diffres.errors import InvalidParameters
from diffres.schemas import Event

IMPORTANCE_CONTRAST = 0.15  # importance is 0-1: less spread than this says nothing
ENERGY_CONTRAST_DB = 6.0
MAX_EVENT_WINDOWS = 64  # ~100 s for the keywords model: bounds the open event's memory
JOIN_GAP_S = 0.5  # same-label events closer than this are one (nobody repeats a word within half a second)


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


def locate(curve: np.ndarray, *, min_contrast: float, max_gap: int, smooth: int = 5) -> tuple[int, int] | None:
    """[start, end) frames of the most salient stretch of `curve`, or None when it is too flat to say."""
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
    excess = np.clip(curve - low, 0, None)
    return max(merged, key=lambda r: float(excess[r[0]:r[1]].sum()))


class _Curve:
    """A per-frame curve stitched from overlapping windows (mean where they overlap)."""

    def __init__(self) -> None:
        self.total = np.zeros(0)
        self.count = np.zeros(0)

    def add(self, offset: int, values: np.ndarray) -> None:
        end = offset + len(values)
        if end > len(self.total):
            grow = end - len(self.total)
            self.total = np.concatenate([self.total, np.zeros(grow)])
            self.count = np.concatenate([self.count, np.zeros(grow)])
        self.total[offset:end] += values
        self.count[offset:end] += 1

    def mean(self) -> np.ndarray:
        return np.divide(self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0)


@dataclass
class _OpenEvent:
    label: int
    start: int  # samples
    end: int
    score: float
    windows: int = 1
    curves: dict[str, _Curve] = field(default_factory=dict)


def frame_energy_db(logmel: np.ndarray) -> np.ndarray:
    """Per-frame energy in dB from the graph's log-mel [frames, n_mels] (log of mel power)."""
    return 10 * np.log10(np.mean(np.exp(logmel.astype(np.float64)), axis=1) + 1e-12)


class EventTracker:
    """Feed classified windows in order (`add`), collect the events they close, `finish` at the end.

    Bounds: the importance curve when it has contrast (>= `IMPORTANCE_CONTRAST`), else the log-mel
    energy when given and it has contrast (>= `ENERGY_CONTRAST_DB`), else the merged windows'.
    Pass neither curve for window bounds.
    """

    def __init__(self, rules: EventRules, *, sample_rate: int, frame_hop: int, max_gap_s: float = 0.3,
                 join_gap_s: float = JOIN_GAP_S, max_event_windows: int = MAX_EVENT_WINDOWS) -> None:
        self.rules = rules
        self.sample_rate, self.frame_hop = sample_rate, frame_hop
        self.max_gap = round(max_gap_s * sample_rate / frame_hop)
        self.max_event_windows = max_event_windows
        self.join_gap_s = join_gap_s
        self.open: _OpenEvent | None = None
        self.pending: Event | None = None  # closed, but a later run of windows may still join it
        n = len(rules.labels)
        self.best = np.zeros(n)  # clip level: best window probability per label
        self.least = np.ones(n)  # and the lowest, for the background label
        self.windows = 0

    def add(self, start: int, length: int, probs: np.ndarray, importance: np.ndarray | None = None,
            energy_db: np.ndarray | None = None) -> list[Event]:
        """One window (start and length in model-rate samples, its softmax, its per-frame importance and
        energy); the events that are final now."""
        self.windows += 1
        np.maximum(self.best, probs, out=self.best)
        np.minimum(self.least, probs, out=self.least)
        label = self.rules.firing(probs)
        closed: list[Event] = []
        if self.open is not None and self.open.windows >= self.max_event_windows:
            closed += [*self._flush(), self._close()]  # a capped event is final at once: nothing joins it
        elif self.open is not None and label != self.open.label:
            closed += self._settle(self._close())
        if self.pending is not None and start >= (self.pending.end_s + self.join_gap_s) * self.sample_rate:
            closed += self._flush()  # no later window can join it any more
        if label is None:
            return closed
        if self.open is None:
            self.open = _OpenEvent(label, start, start + length, float(probs[label]))
        else:
            self.open.end = max(self.open.end, start + length)
            self.open.score = max(self.open.score, float(probs[label]))
            self.open.windows += 1
        offset = round((start - self.open.start) / self.frame_hop)
        for name, values in (("importance", importance), ("energy", energy_db)):
            if values is not None:
                self.open.curves.setdefault(name, _Curve()).add(offset, np.asarray(values, np.float64))
        return closed

    def finish(self) -> list[Event]:
        """The events still open or pending at the end of the audio."""
        closed = self._settle(self._close()) if self.open is not None else []
        return closed + self._flush()

    def _flush(self) -> list[Event]:
        pending, self.pending = self.pending, None
        return [pending] if pending is not None else []

    def _settle(self, event: Event) -> list[Event]:
        """Hold `event` as pending, joining it to the pending one when close enough; what is final now."""
        p = self.pending
        if p is not None and p.label == event.label and event.start_s < p.end_s + self.join_gap_s:
            self.pending = Event(label=p.label, start_s=min(p.start_s, event.start_s),
                                 end_s=max(p.end_s, event.end_s), score=max(p.score, event.score))
            return []
        self.pending = event
        return [p] if p is not None else []

    def provisional(self) -> Event | None:
        """The open event with its windows' bounds (for early notice while streaming)."""
        o = self.open
        return None if o is None else Event(label=self.rules.labels[o.label], start_s=o.start / self.sample_rate,
                                            end_s=o.end / self.sample_rate, score=o.score)

    def _close(self) -> Event:
        o, self.open = self.open, None
        assert o is not None
        start, end = o.start, o.end
        found = None
        for name, contrast in (("importance", IMPORTANCE_CONTRAST), ("energy", ENERGY_CONTRAST_DB)):
            if found is None and name in o.curves:
                found = locate(o.curves[name].mean(), min_contrast=contrast, max_gap=self.max_gap)
        if found is not None:
            start, end = o.start + found[0] * self.frame_hop, min(o.end, o.start + found[1] * self.frame_hop)
        sr = self.sample_rate
        return Event(label=self.rules.labels[o.label], start_s=round(start / sr, 3), end_s=round(end / sr, 3),
                     score=o.score)

    def clip_scores(self) -> np.ndarray:
        """Per label: the best window's probability; for the background label the lowest."""
        scores = self.best.copy()
        if self.rules.background_index is not None and self.windows:
            scores[self.rules.background_index] = self.least[self.rules.background_index]
        return scores
