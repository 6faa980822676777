"""The Python API: an exported model in this process, answering exactly as the service does.

    import diffres
    clf = diffres.Classifier.load("keywords")        # a shipped model, or a path to any exported .onnx
    result = clf.classify("talk.m4a")                # the same fields and values as POST /v1/classify
    print(result.events, result.to_json())

`Classifier` runs the pipeline (diffres.pipeline) with a plain session runner; the service runs
the same pipeline with its micro-batcher. Nothing here imports torch or the web framework.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from diffres.contract import ModelInfo
from diffres.errors import InvalidParameters, ModelNotFound
from diffres.models import MODELS_DIR, available_models
from diffres.pipeline import OUTPUTS, AudioSource, ClassifyOptions, Pipeline, Progress, Steps
from diffres.runner import OnnxModel, SessionRunner
from diffres.schemas import ClassifyResult, Event, ModelDescription
from diffres.windows import WindowPlan

DEFAULT_MODEL = "keywords"
BATCH_SIZE = 16  # rows per session call, as the service's default DIFFRES_BATCH_SIZE


def model_path(name_or_path: str | Path) -> Path:
    """A shipped model's file, or the given path to an exported .onnx; ModelNotFound otherwise."""
    path = Path(name_or_path)
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise ModelNotFound(f"no model file at {path}")
        return path
    shipped = MODELS_DIR / f"{name_or_path}.onnx"
    if not shipped.is_file():
        raise ModelNotFound(f"unknown model '{name_or_path}'; shipped: {', '.join(available_models())} "
                            "(or give the path to an exported .onnx)")
    return shipped


class Classifier:
    """An exported DiffRes model, ready to classify audio of any length in this process.

    Audio up to the long-audio threshold (3 training clips unless set) runs whole; longer audio is
    cut into overlapping windows, classified `batch_size` windows per session call, and its events
    are located as the service locates them.
    """

    def __init__(self, model: OnnxModel, *, batch_size: int = BATCH_SIZE, window_s: float | None = None,
                 window_hop_s: float | None = None, long_audio_s: float | None = None,
                 min_duration_s: float | None = None, max_duration_s: float = math.inf,
                 event_windows: int | None = None) -> None:
        if batch_size < 1:
            raise InvalidParameters(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        plan = WindowPlan.for_model(model.info, window_s=window_s, window_hop_s=window_hop_s,
                                    long_audio_s=long_audio_s, min_duration_s=min_duration_s,
                                    event_windows=event_windows)
        self.pipeline = Pipeline(model.info, plan, max_duration_s=max_duration_s)

    @classmethod
    def load(cls, model: str | Path = DEFAULT_MODEL, *, threads: int = 0, providers: Sequence[str] = (),
             batch_size: int = BATCH_SIZE, **plan: float | None) -> Classifier:
        """A shipped model by name (`available_models()`), or any exported .onnx by path.

        `threads`: onnxruntime intra-op threads (0: the CPUs this process may use); `providers`:
        onnxruntime execution providers (none: CUDA when installed, else CPU); `plan`: window_s,
        window_hop_s, long_audio_s, min_duration_s, max_duration_s, event_windows (the service's settings
        of those names).
        """
        onnx_model = OnnxModel.load(model_path(model), providers=providers, intra_op_threads=threads)
        return cls(onnx_model, batch_size=batch_size, **plan)  # type: ignore[arg-type]

    @property
    def info(self) -> ModelInfo:
        """The model's metadata: labels, sample rate, delta, thresholds, version."""
        return self.model.info

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.info.labels

    def describe(self) -> ModelDescription:
        """The model as the service's `/v1/models` lists it."""
        return self.pipeline.describe(default=True)

    def classify(self, audio: AudioSource, sample_rate: int | None = None, *, top_k: int = 5,
                 min_score: float | None = None, thresholds: Mapping[str, float] | None = None,
                 include_importance: bool = False, include_spectrogram: bool = False,
                 progress: Progress | None = None) -> ClassifyResult:
        """Classify one recording: a path, encoded bytes, a binary file object, or a numpy array of samples
        (`[samples]` or `[samples, channels]`, float in [-1, 1] or integer PCM) with its `sample_rate`.

        The options are the REST API's query parameters of the same names; the result equals
        `POST /v1/classify`'s JSON (`result.to_json()`), timings aside. `progress(done_s, total_s)`
        is called as long audio is decoded (total_s None when the header does not say).
        """
        options = self._options(top_k, min_score, thresholds, include_importance, include_spectrogram)
        opened = self.pipeline.open(audio, sample_rate)
        return self.pipeline.classify(opened, SessionRunner(self.model, self.batch_size), options, progress)

    def classify_many(self, audios: Iterable[AudioSource], sample_rate: int | None = None, *, top_k: int = 5,
                      min_score: float | None = None, thresholds: Mapping[str, float] | None = None,
                      include_importance: bool = False, include_spectrogram: bool = False) -> list[ClassifyResult]:
        """Classify several recordings, in order; windows of different recordings and lengths share session
        calls (rows padded to the longest, each run as if alone through `lengths`). Up to `batch_size`
        recordings are open at once."""
        options = self._options(top_k, min_score, thresholds, include_importance, include_spectrogram)
        return _SharedCalls(self, options).run(audios, sample_rate)

    def stream(self, chunks: Iterable[np.ndarray | bytes], sample_rate: int | None = None, *, channels: int = 1,
               pcm_format: str | None = None, min_score: float | None = None,
               thresholds: Mapping[str, float] | None = None) -> Iterator[Event]:
        """Events of a live stream as soon as they are final: `chunks` of float samples (numpy, in [-1, 1])
        or raw PCM bytes (s16le unless `pcm_format="f32le"`), interleaved when `channels` > 1, at
        `sample_rate` (default: the model's). The same events `/v1/stream` sends."""
        options = self._options(3, min_score, thresholds, False, False)
        runner = SessionRunner(self.model, self.batch_size)
        live = None
        for chunk in chunks:
            if live is None:
                fmt = pcm_format or ("s16le" if isinstance(chunk, (bytes, bytearray, memoryview)) else "f32le")
                live = self.pipeline.live(runner, options, pcm_format=fmt, channels=channels, sample_rate=sample_rate)
            pcm = bytes(chunk) if isinstance(chunk, (bytes, bytearray, memoryview)) else \
                np.ascontiguousarray(chunk, dtype="<f4").tobytes()
            for step in live.push(pcm):
                yield from step.events
        if live is not None:
            steps, closing = live.end()
            for step in steps:
                yield from step.events
            yield from closing

    def _options(self, top_k: int, min_score: float | None, thresholds: Mapping[str, float] | None,
                 include_importance: bool, include_spectrogram: bool) -> ClassifyOptions:
        options = ClassifyOptions(top_k=top_k, include_importance=include_importance,
                                  include_spectrogram=include_spectrogram, min_score=min_score,
                                  thresholds=dict(thresholds or {}))
        options.event_rules(self.info)  # InvalidParameters now, before any audio is read
        return options


class _SharedCalls:
    """Several recordings' pipelines driven together: each session call takes rows from as many of them as
    fit in `batch_size`; a recording joins when another finishes."""

    def __init__(self, classifier: Classifier, options: ClassifyOptions) -> None:
        self.classifier = classifier
        self.options = options
        self.runner = SessionRunner(classifier.model, classifier.batch_size)

    def run(self, audios: Iterable[AudioSource], sample_rate: int | None) -> list[ClassifyResult]:
        sources = iter(enumerate(audios))
        results: dict[int, ClassifyResult] = {}
        active: deque[tuple[int, Steps, list[np.ndarray]]] = deque()
        try:
            while True:
                while len(active) < self.runner.slots and (item := next(sources, None)) is not None:
                    index, audio = item
                    steps = self.classifier.pipeline.steps(self.classifier.pipeline.open(audio, sample_rate),
                                                           self.options, self.runner.slots)
                    active.append((index, steps, next(steps)))
                if not active:
                    return [results[i] for i in range(len(results))]
                self._one_call(active, results)
        finally:
            for _, steps, _ in active:
                steps.close()

    def _one_call(self, active: deque[tuple[int, Steps, list[np.ndarray]]], results: dict[int, ClassifyResult]) -> None:
        """Rows of the first recordings in line, as many as fit one call; each is sent its outputs."""
        count = 1
        while count < len(active) and sum(len(active[i][2]) for i in range(count + 1)) <= self.runner.slots:
            count += 1
        outputs = self.runner([row for i in range(count) for row in active[i][2]], OUTPUTS)
        for _ in range(count):
            index, steps, rows = active[0]
            mine, outputs = outputs[:len(rows)], outputs[len(rows):]
            try:
                next_rows = steps.send(mine)
            except StopIteration as done:
                results[index] = done.value
                active.popleft()
                continue
            active.popleft()
            active.append((index, steps, next_rows))
