"""The one pipeline: audio in, the answer out.

    source -> decode (diffres.decode) -> windows (diffres.windows) -> runner -> session -> answer

Every door goes through here: the service's REST routes and its live stream, the Python API, the
CLI and the event evaluation. What differs between them is only the *runner* they pass in: the
service's micro-batcher (rows of many requests share one session call) or a session called
directly (diffres.runner.SessionRunner). So softmax, top-k, the clip-level aggregate, the segments,
the stitched importance curve and the events (diffres.events) are computed once, here.

- A clip up to the plan's long-audio threshold is one window (the whole clip); longer audio is
  windowed. Either way each window's result goes through `Answer.add`, and the answer of a clip
  that was not windowed simply leaves out `segments` and `windowing`.
- Clip level = what was detected: each label's best window probability (the background label's
  lowest), not a mean diluted by background.
- Audio is decoded while it is classified: only the windows in flight (the runner's `slots`) are
  held, so a one-hour file costs what a few windows cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

import numpy as np

from diffres.contract import LOGMEL, ModelInfo
from diffres.decode import AudioInfo, AudioStream, Decoder, PcmDecoder, open_array, open_audio
from diffres.errors import AudioTooShort, InvalidParameters
from diffres.events import EventRules, EventTracker, frame_energy_db
from diffres.merge import boundaries, merged_logmel
from diffres.runner import DEFAULT_OUTPUTS, RowOutput, Runner
from diffres.schemas import (ClassifyResult, Event, Frames, ModelDescription, Prediction, Segment, Spectrogram,
                             Timing, Windowing)
from diffres.windows import ClipReader, Cut, WindowCutter, WindowPlan

T = TypeVar("T")
Progress = Callable[[float, float | None], None]  # seconds decoded so far, seconds in all (None: unknown)
AudioSource = str | bytes | BinaryIO | np.ndarray  # a path, encoded bytes, a file object, or samples
# Everything an answer may use: events fall back to the log-mel's energy when importance is flat.
OUTPUTS = (*DEFAULT_OUTPUTS, LOGMEL)
IMPORTANCE_DECIMALS = 5


@dataclass(frozen=True)
class ClassifyOptions:
    """What to put in the answer, and the event thresholds (None: the model's `min_score`)."""

    top_k: int = 5
    include_importance: bool = False
    include_spectrogram: bool = False
    include_segments: bool = True
    min_score: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise InvalidParameters(f"top_k must be at least 1, got {self.top_k}")

    def event_rules(self, info: ModelInfo) -> EventRules:
        """This request's thresholds for the model; InvalidParameters for ones the model cannot take."""
        return EventRules.for_model(info, self.min_score, self.thresholds)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()


def top_predictions(probs: np.ndarray, rules: EventRules, k: int) -> list[Prediction]:
    """Best first, each with whether it reached its event threshold; k above the number of labels: all."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(label=rules.labels[i], score=float(probs[i]), passed=rules.passes(int(i), float(probs[i])))
            for i in order]


@dataclass
class WindowStep:
    """What one classified window says, and the events it settled."""

    start: int  # model-rate samples
    length: int
    probs: np.ndarray
    predictions: list[Prediction]
    events: list[Event]  # final now, in the order they were settled
    onset: Event | None  # a run of windows this window started (window bounds: an early notice)
    output: RowOutput  # the model's outputs for this window (importance, log-mel, frames)


class Answer:
    """Classified windows, in order -> clip predictions, segments, stitched importance and events.

    Holds no audio; segments and the importance curve only when asked for (a live stream keeps
    neither, so it runs for ever in bounded memory).
    """

    def __init__(self, info: ModelInfo, plan: WindowPlan, options: ClassifyOptions, *,
                 keep_segments: bool = True) -> None:
        self.info, self.plan, self.options = info, plan, options
        self.tracker = EventTracker(options.event_rules(info), sample_rate=info.sample_rate,
                                    frame_hop=plan.frame_hop, hop=plan.hop, hold=plan.event_windows,
                                    max_word_s=plan.max_word_s)
        self.windows = 0
        self.frames_in = 0
        self.frames_out = 0
        self.segments: list[Segment] | None = [] if keep_segments else None
        self.first: RowOutput | None = None  # the first window's outputs: a clip's spectrogram
        self._importance = _Stitched() if options.include_importance else None

    def add(self, start: int, length: int, out: RowOutput) -> WindowStep:
        """One window's outputs (start and length in model-rate samples)."""
        assert out.logits is not None
        probs = softmax(out.logits)
        predictions = top_predictions(probs, self.tracker.rules, self.options.top_k)
        self.windows += 1
        self.frames_in += out.frames_in
        self.frames_out += out.frames_out
        if self.first is None and self.options.include_spectrogram:
            self.first = out
        if self.segments is not None and self.options.include_segments:
            sr = self.info.sample_rate
            self.segments.append(Segment(start_s=start / sr, end_s=(start + length) / sr, predictions=predictions,
                                         frames=Frames.of(out.frames_in, out.frames_out)))
        if self._importance is not None and out.importance is not None:
            self._importance.add(round(start / self.plan.frame_hop), out.importance)
        energy = None if out.logmel is None else frame_energy_db(out.logmel)
        events = self.tracker.add(start, length, probs, out.importance, energy)
        return WindowStep(start, length, probs, predictions, events, self.tracker.onset, out)

    def finish(self) -> list[Event]:
        """The events still open or pending at the end of the audio."""
        return self.tracker.finish()

    def predictions(self) -> list[Prediction]:
        """Clip level: each label's best window probability (the background label's lowest)."""
        if not self.windows:
            return []
        return top_predictions(self.tracker.clip_scores(), self.tracker.rules, self.options.top_k)

    @property
    def min_score(self) -> float:
        """The default event threshold in effect (labels in `thresholds` use their own)."""
        return self.info.min_score if self.options.min_score is None else self.options.min_score

    def importance(self, total_samples: int) -> list[float] | None:
        """The importance curve over the whole audio (mean where windows overlap)."""
        if self._importance is None:
            return None
        return self._importance.mean(total_samples // self.plan.frame_hop + 1)

    def spectrogram(self) -> Spectrogram | None:
        """The demo page's view of a clip's one inference: log-mel, importance, the merged frames."""
        out = self.first
        if out is None or out.logmel is None or out.importance is None:
            return None
        importance = out.importance.astype(np.float64)
        return Spectrogram(hop_s=self.info.backbone_hop / self.info.sample_rate,  # the frontend's own grid
                           logmel=np.round(out.logmel.astype(np.float64), 2).tolist(),
                           importance=np.round(importance, IMPORTANCE_DECIMALS).tolist(),
                           boundaries=np.round(boundaries(importance), 4).tolist(),
                           merged=np.round(merged_logmel(out.logmel, importance), 2).tolist())


class _Stitched:
    """A per-frame curve over the whole audio from overlapping windows; grows as windows arrive."""

    def __init__(self) -> None:
        self.total = np.zeros(0)
        self.count = np.zeros(0)

    def add(self, offset: int, values: np.ndarray) -> None:
        end = offset + len(values)
        if end > len(self.total):  # grow geometrically: the total length is unknown while decoding
            size = max(end, 2 * len(self.total))
            self.total = np.concatenate([self.total, np.zeros(size - len(self.total))])
            self.count = np.concatenate([self.count, np.zeros(size - len(self.count))])
        self.total[offset:end] += values
        self.count[offset:end] += 1

    def mean(self, frames: int) -> list[float]:
        total, count = self.total[:frames], self.count[:frames]
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return np.round(mean, IMPORTANCE_DECIMALS).tolist()


class _Clock:
    """Seconds spent decoding and waiting for the runner, for `timing_ms`."""

    def __init__(self, started: float, decode_s: float = 0.0) -> None:
        self.started = started
        self.decode = decode_s
        self.inference = 0.0

    def decoding(self, fn: Callable[..., T], *args: object) -> T:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.decode += time.perf_counter() - t0

    def timing(self) -> Timing:
        return Timing(decode=round(self.decode * 1000, 3), inference=round(self.inference * 1000, 3),
                      total=round((time.perf_counter() - self.started) * 1000, 3))


@dataclass
class Opened:
    """Audio whose header passed the checks, not decoded yet; `close` it if it is never classified."""

    decoder: Decoder
    info: AudioInfo
    started: float  # perf_counter when the request began (for timing_ms.total)
    decode_s: float  # seconds spent opening

    def samples_at(self, rate: int) -> int | None:
        """The length the header promises at `rate` (None: it does not say, as browser WebM)."""
        return None if self.info.frames is None else self.info.frames * rate // self.info.sample_rate

    def close(self) -> None:
        self.decoder.close()

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Steps = Generator[list[np.ndarray], list[RowOutput], ClassifyResult]


class Pipeline:
    """One model's pipeline: its metadata, its window plan and the longest audio it accepts."""

    def __init__(self, info: ModelInfo, plan: WindowPlan, *, max_duration_s: float = math.inf) -> None:
        self.info = info
        self.plan = plan
        self.max_duration_s = max_duration_s

    def describe(self, *, default: bool = False) -> ModelDescription:
        """The model as `/v1/models` lists it: labels, audio settings, window plan, thresholds."""
        i, sr, plan = self.info, self.info.sample_rate, self.plan
        return ModelDescription(
            name=i.name, labels=list(i.labels), sample_rate=sr, delta=i.delta, version=i.version,
            clip_seconds=i.clip_seconds, hop_ms=i.hop_ms, win_ms=i.win_ms, n_mels=i.n_mels, frontend=i.frontend,
            resolution=i.resolution, default=default, window_s=plan.window / sr, window_hop_s=plan.hop / sr,
            long_audio_s=plan.long_threshold / sr, background_label=i.background_label, min_score=i.min_score,
            event_windows=plan.event_windows, max_word_s=plan.max_word_s)

    def open(self, source: AudioSource, sample_rate: int | None = None, *, started: float | None = None) -> Opened:
        """Open and check the header (rate, length) before any decoding; numpy samples need `sample_rate`."""
        t0 = time.perf_counter()
        if isinstance(source, np.ndarray):
            if sample_rate is None:
                raise InvalidParameters("an array of samples needs its sample_rate")
            decoder, info = open_array(source, sample_rate, self.max_duration_s)
        else:
            decoder, info = open_audio(_file_like(source), self.max_duration_s)
        if info.duration_s is not None and 0 < info.duration_s < self.plan.min_duration_s:
            decoder.close()
            raise self._too_short(info.duration_s)
        return Opened(decoder, info, t0 if started is None else started, time.perf_counter() - t0)

    def classify(self, opened: Opened, runner: Runner, options: ClassifyOptions,
                 progress: Progress | None = None) -> ClassifyResult:
        """Decode, window, run and answer; closes `opened`."""
        return self.start(opened, options, runner.slots, progress).finish(runner)

    def steps(self, opened: Opened, options: ClassifyOptions, slots: int, progress: Progress | None = None) -> Steps:
        """The classification as a generator: yields the rows to run (at most `slots`), is sent their
        outputs, returns the answer. Several can share session calls. `progress` is
        called with the seconds decoded so far and the total the header promises (None: unknown)."""
        run = self.start(opened, options, slots, progress)
        try:
            while rows := run.rows():
                run.add((yield rows))
        finally:
            run.close()
        return run.result()

    def start(self, opened: Opened, options: ClassifyOptions, slots: int,
              progress: Progress | None = None) -> Classification:
        """The classification as an object, for a caller that drives it itself (`steps` is this as a
        generator): `rows()` decodes and gives the next rows, `add(outputs)` takes their outputs, `result()`
        answers once `rows()` gave none. `decoded` says the audio is decoded to its end, so what is left is
        the answer only (the service then finishes it on its event loop, without another thread hop)."""
        return Classification(self, opened, options, slots, progress)

    def live(self, runner: Runner, options: ClassifyOptions, *, pcm_format: str = "s16le", channels: int = 1,
             sample_rate: int | None = None) -> LiveClassification:
        """A live stream of raw PCM: always windowed, no duration limit, bounded memory."""
        return LiveClassification(self, runner, options, pcm_format, channels, sample_rate or self.info.sample_rate)

    def _check_length(self, stream: AudioStream, cuts: list[Cut]) -> None:
        duration = stream.frames_read / stream.info.sample_rate
        if duration < self.plan.min_duration_s or len(cuts[0][1]) == 0:
            raise self._too_short(duration)

    def _too_short(self, duration: float) -> AudioTooShort:
        return AudioTooShort(f"audio is {duration * 1000:.2f} ms long; at least "
                             f"{self.plan.min_duration_s * 1000:g} ms is needed")

    def _result(self, info: AudioInfo, stream: AudioStream, reader: ClipReader, answer: Answer,
                events: list[Event], clock: _Clock) -> ClassifyResult:
        sr = self.info.sample_rate
        importance = answer.importance(reader.total_samples)
        warnings = []
        if stream.peak > 1.0:
            warnings.append(f"samples exceed [-1, 1] (peak {stream.peak:.3g}); passed to the model unscaled")
        if answer.options.include_spectrogram and reader.windowed:
            warnings.append(f"no spectrogram: audio over {self.plan.long_threshold / sr:g} s is windowed (see "
                            "segments; include_importance gives the importance over the whole clip)")
        windowing = Windowing(window_s=self.plan.window / sr, hop_s=self.plan.hop / sr, windows=answer.windows)
        return ClassifyResult(
            model=self.info.name, model_version=self.info.version, duration_s=stream.duration_s,
            sample_rate=info.sample_rate, channels=info.channels, format=f"{info.format}/{info.subtype}",
            detected=bool(events), min_score=answer.min_score, predictions=answer.predictions(),
            frames=Frames.of(answer.frames_in, answer.frames_out), timing_ms=clock.timing(),
            segments=answer.segments if reader.windowed and answer.options.include_segments else None,
            windowing=windowing if reader.windowed else None, importance=importance,
            importance_hop_s=self.plan.frame_hop / sr if importance is not None else None,
            spectrogram=None if reader.windowed else answer.spectrogram(), events=events,
            warnings=warnings or None)



class Classification:
    """One classification driven step by step (Pipeline.start; Pipeline.steps is this as a generator).

    `rows()` decodes up to `slots` more windows (the whole clip when it is not windowed) and returns them,
    [] once the audio is over; `add(outputs)` takes the outputs of the last rows, in order; `result()` is
    the answer after `rows()` gave none. `close()` closes the decoder (safe to call twice); `result()`
    closes it too.
    """

    def __init__(self, pipeline: Pipeline, opened: Opened, options: ClassifyOptions, slots: int,
                 progress: Progress | None = None) -> None:
        self.pipeline, self.opened, self.slots, self.progress = pipeline, opened, slots, progress
        self.answer = Answer(pipeline.info, pipeline.plan, options)
        self.clock = _Clock(opened.started, opened.decode_s)
        self.stream = AudioStream(opened.decoder, opened.info, pipeline.info.sample_rate, pipeline.max_duration_s)
        self.reader = ClipReader(self.stream, pipeline.plan)
        self.events: list[Event] = []
        self._cuts: list[Cut] = []
        self._sent = 0.0
        self._closed = False

    @property
    def decoded(self) -> bool:
        """The audio is decoded to its end: what is left needs no decoder."""
        return self.reader.finished

    def rows(self) -> list[np.ndarray]:
        """The next rows to run (at most `slots`); [] once the audio is over."""
        cuts = self.clock.decoding(self.reader.next, self.slots)
        if cuts and not self.reader.windowed:
            self.pipeline._check_length(self.stream, cuts)
        self._cuts = cuts
        self._sent = time.perf_counter()
        return [samples for _, samples in cuts]

    def add(self, outputs: list[RowOutput]) -> None:
        """The outputs of the rows `rows()` gave last, in order."""
        self.clock.inference += time.perf_counter() - self._sent
        for (start, samples), out in zip(self._cuts, outputs, strict=True):
            self.events += self.answer.add(start, len(samples), out).events
        self._cuts = []
        if self.progress is not None:
            self.progress(self.stream.duration_s, self.opened.info.duration_s)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.opened.close()

    def finish(self, runner: Runner, rows: list[np.ndarray] | None = None) -> ClassifyResult:
        """The rest of it through `runner` (from `rows` already given by `rows()`, else the next ones), then
        the answer; the decoder is closed whatever happens."""
        try:
            rows = self.rows() if rows is None else rows
            while rows:
                self.add(runner(rows, OUTPUTS))
                rows = self.rows()
            return self.result()
        finally:
            self.close()

    def result(self) -> ClassifyResult:
        """The answer (call it after `rows()` gave no rows)."""
        self.close()
        answer = self.answer
        return self.pipeline._result(self.opened.info, self.stream, self.reader, answer,
                                     self.events + answer.finish(), self.clock)


def _file_like(source: str | bytes | BinaryIO) -> str | BinaryIO:
    """Encoded bytes become a file object; paths and file objects pass through."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        return io.BytesIO(bytes(source))
    return source


class LiveClassification:
    """One live stream: `push` PCM as it arrives and get the steps of the windows it completes;
    `end` drains the resampler and the end-aligned last window, and settles the open event."""

    def __init__(self, pipeline: Pipeline, runner: Runner, options: ClassifyOptions, pcm_format: str,
                 channels: int, sample_rate: int) -> None:
        self.pipeline, self.runner = pipeline, runner
        self.decoder = PcmDecoder(pcm_format, channels, sample_rate)
        info, plan = pipeline.info, pipeline.plan
        self.audio = AudioStream(self.decoder, self.decoder.info, info.sample_rate)  # streams may be endless
        self.cutter = WindowCutter(plan.window, plan.hop)
        self.answer = Answer(info, plan, options, keep_segments=False)

    @property
    def received_s(self) -> float:
        """Seconds of audio received so far (at the model's rate)."""
        return self.cutter.total / self.pipeline.info.sample_rate

    def push(self, pcm: bytes) -> list[WindowStep]:
        """Raw PCM (any size, a sample may straddle two pushes) -> steps of the windows it completes."""
        self.decoder.feed(pcm)
        cuts: list[Cut] = []
        while self.decoder.frames_buffered:
            block = self.audio.read()
            if block is not None:
                cuts += self.cutter.push(block)
        return self._run(cuts)

    def end(self) -> tuple[list[WindowStep], list[Event]]:
        """The audio is over: the last windows' steps, and the events they leave open."""
        cuts: list[Cut] = []
        while (block := self.audio.read()) is not None:
            cuts += self.cutter.push(block)
        steps = self._run(cuts + self.cutter.finish())
        return steps, self.answer.finish()

    def _run(self, cuts: list[Cut]) -> list[WindowStep]:
        steps = []
        for i in range(0, len(cuts), self.runner.slots):
            group = cuts[i:i + self.runner.slots]
            outputs = self.runner([samples for _, samples in group], OUTPUTS)
            steps += [self.answer.add(start, len(samples), out) for (start, samples), out in zip(group, outputs,
                                                                                                 strict=True)]
        return steps
