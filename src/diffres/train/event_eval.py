"""Events found on recordings with known keywords (diffres.train.scenes), scored: F1, false alarms, bound errors.

Training chooses its event rule with it (on validation recordings), and `make eval-events` reports a
model with it (on held-out ones). A recording is classified once through the pipeline (the windows
the service runs); its events are then replayed through the pipeline's `Answer` at other thresholds,
other event rules or with outputs left out, without running the model again. Torch-free.

Scoring: a found event matches a reference when the label is the same and the onsets are within
COLLAR_S, closest pairs first, each at most once; false alarms are events on recordings without keywords.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from diffres.pipeline import Answer, ClassifyOptions, Pipeline, WindowStep
from diffres.runner import Runner
from diffres.schemas import Event
from diffres.train.scenes import Scene

COLLAR_S = 0.5
# What each bounds method leaves out of a window's outputs before its events are located.
ABLATIONS: dict[str, dict[str, None]] = {"service": {}, "importance": {"logmel": None}, "energy": {"importance": None},
                                         "window": {"importance": None, "logmel": None}}


def classify(pipeline: Pipeline, runner: Runner, audio: np.ndarray) -> list[WindowStep]:
    """The pipeline's windows of a recording, windowed as the live stream (and long uploads) are."""
    live = pipeline.live(runner, ClassifyOptions(), pcm_format="f32le")
    steps = live.push(audio.astype("<f4").tobytes())
    tail, _ = live.end()
    return steps + tail


def detect(steps: list[WindowStep], pipeline: Pipeline, options: ClassifyOptions, method: str = "service",
           event_windows: int | None = None) -> list[Event]:
    """A recording's events at `options`' thresholds and `event_windows` (default: the plan's), with the bounds
    of `method`."""
    plan = pipeline.plan if event_windows is None else replace(pipeline.plan, event_windows=event_windows)
    answer = Answer(pipeline.info, plan, options, keep_segments=False)
    events = []
    for step in steps:
        events += answer.add(step.start, step.length, replace(step.output, **ABLATIONS[method])).events
    return events + answer.finish()


def match(reference: list[tuple[str, float, float]], found: list[Event]) -> list[tuple[int, int]]:
    """(reference, found) pairs: same label, onsets within the collar, closest pairs first, one-to-one."""
    pairs = sorted((abs(r[1] - e.start_s), i, j) for i, r in enumerate(reference) for j, e in enumerate(found)
                   if r[0] == e.label and abs(r[1] - e.start_s) <= COLLAR_S)
    used_r, used_f, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_r and j not in used_f:
            used_r.add(i)
            used_f.add(j)
            out.append((i, j))
    return out


@dataclass
class Tally:
    """Counts of one condition (or all): matches, misses, false alarms on keyword-free audio, bound errors."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    false_alarms: int = 0
    background_s: float = 0.0
    onset_err: list[float] = field(default_factory=list)
    offset_err: list[float] = field(default_factory=list)

    def add(self, scene: Scene, found: list[Event], background: bool, sample_rate: int) -> None:
        if background:
            self.false_alarms += len(found)
            self.background_s += len(scene.audio) / sample_rate
            return
        pairs = match(scene.events, found)
        self.tp += len(pairs)
        self.fp += len(found) - len(pairs)
        self.fn += len(scene.events) - len(pairs)
        self.onset_err += [abs(scene.events[i][1] - found[j].start_s) for i, j in pairs]
        self.offset_err += [abs(scene.events[i][2] - found[j].end_s) for i, j in pairs]

    def merge(self, other: Tally) -> None:
        for name in ("tp", "fp", "fn", "false_alarms", "background_s", "onset_err", "offset_err"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def false_alarms_per_hour(self) -> float | None:
        """False alarms per hour of keyword-free audio; None when there was none."""
        return self.false_alarms / (self.background_s / 3600) if self.background_s > 0 else None

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    def summary(self) -> dict[str, float | int | None]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        per_hour = self.false_alarms_per_hour

        def median(values: list[float]) -> float | None:
            return round(float(np.median(values)), 3) if values else None

        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "false_alarms": self.false_alarms,
                "background_s": round(self.background_s, 1), "precision": round(precision, 4),
                "recall": round(recall, 4), "f1": round(self.f1, 4),
                "onset_abs_err_median_s": median(self.onset_err), "offset_abs_err_median_s": median(self.offset_err),
                "false_alarms_per_hour": round(per_hour, 2) if per_hour is not None else None}


Classified = list[tuple[Scene, list[WindowStep], bool]]  # a recording, its windows, whether keyword-free


def tally(classified: Iterable[tuple[Scene, list[WindowStep], bool]], pipeline: Pipeline, options: ClassifyOptions,
          method: str = "service", event_windows: int | None = None) -> dict[str, Tally]:
    """Counts per condition and over all ("all") for one threshold, event rule and bounds method."""
    per: dict[str, Tally] = {}
    for scene, steps, background in classified:
        found = detect(steps, pipeline, options, method, event_windows)
        per.setdefault(scene.condition, Tally()).add(scene, found, background, pipeline.info.sample_rate)
    total = Tally()
    for t in per.values():
        total.merge(t)
    return {**per, "all": total}
