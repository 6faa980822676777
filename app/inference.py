"""Classify one upload: decode in a thread, batch through the model, aggregate windows into one answer.

Clip-level result of long audio = what was detected: each label's best window probability (the
background label's lowest), not a mean diluted by background. Events (runtime/events.py) come from
the same windows, in order. Frame counts are summed over windows; the importance curve is stitched
on the model's frame grid, averaging where windows overlap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from runtime.audio import AudioStream, ClipReader, Whole, Windows, open_audio
from app.batching import Lease
from app.config import Settings
from app.errors import BadAudio, InvalidParameters
from app.metrics import Metrics
from app.models import LoadedModel
from app.schemas import ClassifyResponse, EventOut, Frames, Prediction, Segment, Spectrogram, Timing, Windowing
from app.threads import run_to_completion
from app.uploads import Upload
from runtime.contract import LOGMEL, ModelInfo
from runtime.events import EventRules, EventTracker, frame_energy_db, parse_thresholds
from runtime.merge import boundaries, merged_logmel
from runtime.runner import DEFAULT_OUTPUTS, RowOutput

T = TypeVar("T")


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 5
    include_importance: bool = False
    include_spectrogram: bool = False
    min_score: float | None = None  # event threshold; None: the model's min_score
    thresholds: str = ""  # per-label event thresholds, `label:score,label:score`

    @classmethod
    def of(cls, params: object) -> ClassifyOptions:
        """From a request's parameters (any object with the same attribute names)."""
        return cls(**{name: getattr(params, name) for name in ("top_k", "include_importance", "include_spectrogram",
                                                                "min_score", "thresholds")})

    def event_rules(self, info: ModelInfo) -> EventRules:
        """This request's event thresholds for the model; 422 for ones the model cannot take."""
        try:
            return EventRules.for_model(info, self.min_score, parse_thresholds(self.thresholds))
        except ValueError as exc:
            raise InvalidParameters(str(exc)) from exc

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model outputs this request needs (what the batch call asks onnxruntime for); the log-mel
        always: events fall back to its energy for onsets when the importance curve is flat."""
        return (*DEFAULT_OUTPUTS, LOGMEL)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()


def top_predictions(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    """Best first; k above the number of labels returns them all."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(label=labels[i], score=float(probs[i])) for i in order]


class WindowAggregator:
    """Per-window segments plus the running clip-level aggregate; holds no audio."""

    def __init__(self, model: LoadedModel, options: ClassifyOptions) -> None:
        self.model = model
        self.options = options
        self.count = 0
        self.frames_in = 0
        self.frames_out = 0
        self.segments: list[Segment] = []
        self.tracker = new_tracker(model, options)
        self.events: list[EventOut] = []
        self._imp_sum = np.zeros(0)
        self._imp_count = np.zeros(0)

    def add(self, start: int, length: int, out: RowOutput) -> None:
        sr = self.model.info.sample_rate
        probs = softmax(out.logits)
        self.count += 1
        self.frames_in += out.frames_in
        self.frames_out += out.frames_out
        self.segments.append(Segment(start_s=start / sr, end_s=(start + length) / sr,
                                     predictions=top_predictions(probs, self.model.info.labels, self.options.top_k),
                                     frames=Frames.of(out.frames_in, out.frames_out)))
        self.events += map(EventOut.of, self.tracker.add(start, length, probs, *event_curves(out)))
        if self.options.include_importance:
            self._add_importance(round(start / self.model.plan.frame_hop), out.importance)

    def _add_importance(self, offset: int, values: np.ndarray) -> None:
        end = offset + len(values)
        if end > len(self._imp_sum):  # grow geometrically: the total length is unknown while streaming
            size = max(end, 2 * len(self._imp_sum))
            self._imp_sum = np.concatenate([self._imp_sum, np.zeros(size - len(self._imp_sum))])
            self._imp_count = np.concatenate([self._imp_count, np.zeros(size - len(self._imp_count))])
        self._imp_sum[offset:end] += values
        self._imp_count[offset:end] += 1

    def importance(self, total_samples: int) -> list[float]:
        frames = total_samples // self.model.plan.frame_hop + 1
        total = self._imp_sum[:frames]
        count = self._imp_count[:frames]
        return np.round(np.divide(total, count, out=np.zeros_like(total), where=count > 0), 5).tolist()

    def clip_predictions(self) -> list[Prediction]:
        return top_predictions(self.tracker.clip_scores(), self.model.info.labels, self.options.top_k)

    def finish_events(self) -> list[EventOut]:
        self.events += map(EventOut.of, self.tracker.finish())
        return self.events


def event_curves(out: RowOutput) -> tuple[np.ndarray | None, np.ndarray | None]:
    """What locates an event inside its windows: the importance curve, and the log-mel energy."""
    return out.importance, None if out.logmel is None else frame_energy_db(out.logmel)


def new_tracker(model: LoadedModel, options: ClassifyOptions) -> EventTracker:
    """Events of one request: its thresholds, onsets refined with the importance curve."""
    return EventTracker(options.event_rules(model.info), sample_rate=model.info.sample_rate,
                        frame_hop=model.plan.frame_hop)


async def _timed(clock: list[float], fn: Callable[..., T], *args: object) -> T:
    """Run `fn` in a worker thread (waited for even when cancelled), adding its duration to clock[0]."""
    start = time.perf_counter()
    try:
        return await run_to_completion(fn, *args)
    finally:
        clock[0] += time.perf_counter() - start


@dataclass
class _Outcome:
    """What the model said about the clip, before it is dressed up as a response."""

    predictions: list[Prediction]
    frames_in: int
    frames_out: int
    segments: list[Segment] | None = None
    windowing: Windowing | None = None
    importance: list[float] | None = None
    spectrogram: Spectrogram | None = None
    events: list[EventOut] | None = None


def spectrogram_of(out: RowOutput, model: LoadedModel) -> Spectrogram:
    """The demo page's view of one inference: log-mel, importance and the merged frames (runtime/merge.py)."""
    importance = out.importance.astype(np.float64)
    return Spectrogram(hop_s=model.info.backbone_hop / model.info.sample_rate,  # the frontend's own frame grid
                       logmel=np.round(out.logmel, 2).tolist(), importance=np.round(importance, 5).tolist(),
                       boundaries=np.round(boundaries(importance), 4).tolist(),
                       merged=np.round(merged_logmel(out.logmel, importance), 2).tolist())


async def _classify_whole(lease: Lease, samples: np.ndarray, model: LoadedModel,
                          options: ClassifyOptions) -> _Outcome:
    [out] = await lease.run([samples], options.outputs)
    probs = softmax(out.logits)
    importance = np.round(out.importance, 5).tolist() if options.include_importance else None
    spectrogram = spectrogram_of(out, model) if options.include_spectrogram else None
    tracker = new_tracker(model, options)
    events = [EventOut.of(e) for e in tracker.add(0, len(samples), probs, *event_curves(out)) + tracker.finish()]
    return _Outcome(top_predictions(probs, model.info.labels, options.top_k), out.frames_in, out.frames_out,
                    importance=importance, spectrogram=spectrogram, events=events)


async def _classify_windows(lease: Lease, reader: ClipReader, chunk: Windows | Whole | None,
                            model: LoadedModel, options: ClassifyOptions, decode: list[float]) -> _Outcome:
    """Decode the next windows while holding only those in flight; aggregate as results come back."""
    agg = WindowAggregator(model, options)
    while isinstance(chunk, Windows):
        if chunk.windows:
            outs = await lease.run(chunk.windows, options.outputs)
            for start, window, out in zip(chunk.starts, chunk.windows, outs, strict=True):
                agg.add(start, len(window), out)
        chunk = await _timed(decode, reader.next, lease.slots)
    sr = model.info.sample_rate
    return _Outcome(agg.clip_predictions(), agg.frames_in, agg.frames_out, agg.segments,
                    Windowing(window_s=model.plan.window / sr, hop_s=model.plan.hop / sr, windows=agg.count),
                    agg.importance(reader.total_samples) if options.include_importance else None,
                    events=agg.finish_events())


async def classify_upload(upload: Upload, model: LoadedModel, options: ClassifyOptions, settings: Settings,
                          metrics: Metrics, started: float) -> ClassifyResponse:
    """Decode `upload` block by block and classify it: in one inference, or windowed when long."""
    if upload.size == 0:
        raise BadAudio("uploaded file is empty", code="empty_audio")
    plan, sr = model.plan, model.info.sample_rate
    options.event_rules(model.info)  # 422 before decoding
    decode = [0.0]
    snd, info = await _timed(decode, open_audio, upload.file, settings.max_duration_s)
    try:
        if info.duration_s is not None and 0 < info.duration_s < plan.min_duration_s:
            raise _too_short(info.duration_s, plan.min_duration_s)
        # No length in the header (browser WebM, streamed FLAC): it may be long, so it is admitted as long.
        samples = None if info.frames is None else info.frames * sr // info.sample_rate
        with await model.admit(samples) as lease:  # 503, or a wait for a long-job turn, before decoding
            stream = AudioStream(snd, info, sr, settings.max_duration_s)
            reader = ClipReader(stream, plan.window, plan.hop, plan.long_threshold)
            chunk = await _timed(decode, reader.next, lease.slots)
            inference_started, decoded_before = time.perf_counter(), decode[0]
            if isinstance(chunk, Whole):
                duration = stream.frames_read / info.sample_rate
                if duration < plan.min_duration_s or len(chunk.samples) == 0:
                    raise _too_short(duration, plan.min_duration_s)
                outcome = await _classify_whole(lease, chunk.samples, model, options)
            else:
                outcome = await _classify_windows(lease, reader, chunk, model, options, decode)
            # Windowed, decoding and inference alternate: inference is the wall time not spent decoding.
            inference = time.perf_counter() - inference_started - (decode[0] - decoded_before)
    finally:
        snd.close()
    duration = stream.frames_read / info.sample_rate
    metrics.observe_result(model.name, duration, outcome.frames_in, outcome.frames_out)
    warnings: list[str] = []
    if stream.peak > 1.0:
        warnings.append(f"samples exceed [-1, 1] (peak {stream.peak:.3g}); passed to the model unscaled")
    if options.include_spectrogram and outcome.spectrogram is None:
        warnings.append(f"no spectrogram: audio over {plan.long_threshold / sr:g} s is windowed (see segments; "
                        "include_importance gives the importance over the whole clip)")
    return ClassifyResponse(
        model=model.name, model_version=model.info.version, duration_s=duration, sample_rate=info.sample_rate,
        channels=info.channels, format=f"{info.format}/{info.subtype}", predictions=outcome.predictions,
        frames=Frames.of(outcome.frames_in, outcome.frames_out),
        timing_ms=Timing(decode=round(decode[0] * 1000, 3), inference=round(inference * 1000, 3),
                         total=round((time.perf_counter() - started) * 1000, 3)),
        segments=outcome.segments, windowing=outcome.windowing, importance=outcome.importance,
        importance_hop_s=plan.frame_hop / sr if outcome.importance is not None else None,
        spectrogram=outcome.spectrogram, events=outcome.events, warnings=warnings or None)


def _too_short(duration: float, minimum: float) -> BadAudio:
    return BadAudio(f"audio is {duration * 1000:.2f} ms long; at least {minimum * 1000:g} ms is needed "
                    "(DIFFRES_MIN_DURATION_S; default: one analysis window of the model)", code="audio_too_short")

