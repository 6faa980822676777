"""Model registry: per *.onnx file, its OnnxModel, its pipeline (window plan, limits) and its micro-batcher.

Loading and warm-up run in a thread after the server starts, so /healthz answers at once while
/readyz stays 503 until every session has run once (first calls allocate and are slow).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffres.cpu import available_cpus
from diffres.errors import ModelNotFound, Unavailable
from diffres.pipeline import AudioSource, ClassifyOptions, Pipeline
from diffres.runner import OnnxModel, RowOutput
from diffres.schemas import ClassifyResult
from diffres.session import uses_gpu
from diffres.windows import WindowPlan
from diffres.server.admission import row_units
from diffres.server.batch_policy import BatchPolicy, LengthGrid
from diffres.server.batching import Lease, LeaseRunner, MicroBatcher
from diffres.server.config import Settings
from diffres.server.metrics import Metrics
from diffres.server.threads import run_to_completion

log = logging.getLogger(__name__)


def window_plan(model: OnnxModel, settings: Settings) -> WindowPlan:
    return WindowPlan.for_model(model.info, window_s=settings.window_s, window_hop_s=settings.window_hop_s,
                                long_audio_s=settings.long_audio_s, min_duration_s=settings.min_duration_s,
                                event_windows=settings.event_windows)


def batch_policy(plan: WindowPlan, settings: Settings) -> BatchPolicy:
    """Grid anchored at the window (windows are never padded); floor an eighth of it."""
    grid = LengthGrid(anchor=plan.window, steps_per_octave=settings.batch_grid_steps, floor=max(1, plan.window // 8))
    max_samples = settings.batch_max_samples or settings.batch_size * plan.window
    return BatchPolicy(max_batch=settings.batch_size, max_samples=max_samples,
                       max_padding=settings.batch_max_padding, grid=grid)


@dataclass(frozen=True)
class CallLayout:
    """How a model's session calls use the CPUs: `calls` at once, `threads` intra-op threads each."""

    threads: int
    calls: int


def call_layout(settings: Settings, on_gpu: bool, cpus: int) -> CallLayout:
    """On CPU, one single-threaded call per CPU by default: a call split over two threads stalls whenever
    the event loop or a decoder takes one of its cores, and two calls overlap that Python work (measured
    in reports/LOADTEST.md). Explicit settings win; on a GPU, one call at a time."""
    if on_gpu:
        return CallLayout(settings.intra_op_threads, settings.concurrent_calls or 1)
    if settings.concurrent_calls:
        return CallLayout(settings.intra_op_threads or max(1, cpus // settings.concurrent_calls),
                          settings.concurrent_calls)
    if settings.intra_op_threads:
        return CallLayout(settings.intra_op_threads, max(1, cpus // settings.intra_op_threads))
    return CallLayout(1, cpus)


def layout_here(settings: Settings) -> CallLayout:
    """call_layout for this process: its providers and the CPUs it may use (or `settings.cpus`)."""
    return call_layout(settings, uses_gpu(settings.providers), settings.cpus or available_cpus())


class LoadedModel:
    """A model ready to serve: OnnxModel, its pipeline (window plan, limits) and its own micro-batcher."""

    def __init__(self, model: OnnxModel, settings: Settings, metrics: Metrics, layout: CallLayout) -> None:
        self.layout = layout
        self.model = model
        self.info = model.info
        self.plan = window_plan(model, settings)
        self.pipeline = Pipeline(self.info, self.plan, max_duration_s=settings.max_duration_s)
        self.metrics = metrics
        self.policy = batch_policy(self.plan, settings)
        self.batcher = MicroBatcher(
            self.info.name, self.run_batch, self.policy, max_wait_s=settings.batch_wait_ms / 1000,
            queue_limit=settings.queue_limit, retry_after_s=settings.retry_after_s,
            max_long_jobs=settings.max_long_jobs, long_job_queue=settings.long_job_queue,
            concurrent_calls=layout.calls,
            on_batch=lambda stats: metrics.observe_batch(self.info.name, stats, self.batcher.depth),
            on_reject=lambda reason: metrics.rejected.labels(self.info.name, reason).inc())

    @property
    def name(self) -> str:
        return self.info.name

    async def admit(self, samples: int | None) -> Lease:
        """The lease for a clip of `samples` (model rate; None: the header does not say, so maybe long).

        Long audio waits for a long-job turn and holds windows; a clip that runs whole holds the
        work units of its one row. 503 at once when there is no room (server/admission.py).
        """
        if samples is None or self.plan.is_long(samples):
            return await self.batcher.long_lease()
        return self.batcher.lease(1, row_units(samples, self.plan.window))

    async def classify(self, source: AudioSource, options: ClassifyOptions, started: float) -> ClassifyResult:
        """The pipeline in a worker thread, its rows through this model's batcher: open and check the
        header, take a lease sized by it (503 or a wait for a long-job turn), then decode and classify."""
        opened = await run_to_completion(functools.partial(self.pipeline.open, source, started=started))
        with opened, await self.admit(opened.samples_at(self.info.sample_rate)) as lease:
            runner = LeaseRunner(lease, asyncio.get_running_loop())
            result = await run_to_completion(self.pipeline.classify, opened, runner, options, on_cancel=runner.cancel)
        self.metrics.observe_result(self.name, result.duration_s, result.frames.input, result.frames.output)
        self.metrics.observe_events(self.name, [e.label for e in result.events or []])
        return result

    def run_batch(self, rows: list[np.ndarray], pad_to: int, outputs: Sequence[str]) -> list[RowOutput]:
        """One session call (runs in the batcher thread)."""
        return self.model.run(rows, outputs, pad_to=pad_to)

    def warm_up(self) -> None:
        """Full batches of windows, and one row of the window's length: the shapes traffic hits most."""
        for rows in sorted({1, self.policy.max_batch}):
            self.model.run([np.zeros(self.plan.window, np.float32)] * rows, pad_to=self.plan.window)


def load_model(path: Path, settings: Settings, metrics: Metrics) -> LoadedModel:
    layout = layout_here(settings)
    model = OnnxModel.load(path, providers=settings.providers, intra_op_threads=layout.threads,
                           inter_op_threads=settings.inter_op_threads, spinning=settings.ort_spinning)
    return LoadedModel(model, settings, metrics, layout)


def public_reason(exc: Exception, path: Path) -> str:
    """Why a model failed, for probes: the error's first line with the file's folder left out."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for where in (str(path.resolve().parent), str(path.parent)):
        if where and where != ".":
            text = text.replace(where + "/", "").replace(where, "")
    return f"{type(exc).__name__}: {text}"[:300]


class ModelRegistry:
    """All models of `model_dir`, by name (file stem); readiness once all are loaded and warm."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.failed: dict[str, str] = {}
        self.ready = False
        self.status = "loading"
        self._ready_event = asyncio.Event()
        self._closing = False

    def _load_all(self) -> list[LoadedModel]:
        folder = self.settings.model_dir
        paths = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
        loaded = []
        for path in paths:
            try:
                model = load_model(path, self.settings, self.metrics)
                if self.settings.warmup:
                    model.warm_up()
            except Exception as exc:  # one bad file must not take the others down
                log.error("model %s not loaded: %s", path, exc)
                self.failed[path.stem] = public_reason(exc, path)
                continue
            log.info("model %s loaded: %d labels, %d Hz, providers %s, %d call(s) at once of %d thread(s), "
                     "version %s", model.name, len(model.info.labels), model.info.sample_rate, model.model.providers,
                     model.layout.calls, model.layout.threads, model.info.version)
            loaded.append(model)
        return loaded

    async def start(self) -> None:
        """Load and warm up off the event loop; flip readiness when done."""
        try:
            loaded = await asyncio.to_thread(self._load_all)
        except Exception as exc:
            log.exception("loading models failed")
            self.status = f"loading models failed: {type(exc).__name__}"
            return
        if self._closing:
            return
        for model in loaded:
            model.batcher.start()
            self.models[model.name] = model
            self.metrics.observe_model(model.info)
        if not self.models:
            self.status = f"no model could be loaded from the model folder ({len(self.failed)} failed)"
            log.error(self.status)
            return
        if self.settings.default_model not in self.models:
            log.warning("default model %s is not loaded; requests must name a model", self.settings.default_model)
        self.ready = True
        self.status = "ready"
        self.metrics.ready.set(1)
        self._ready_event.set()
        log.info("ready: %d model%s (%s), demo at %s", len(self.models), "" if len(self.models) == 1 else "s",
                 ", ".join(sorted(self.models)), self.settings.public_url)

    @property
    def healthy(self) -> bool:
        """Ready, and every model file loaded: a failed file makes readiness say 'degraded' (503)."""
        return self.ready and not self.failed

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready_event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def get(self, name: str | None) -> LoadedModel:
        """The named (or default) model; 503 before readiness, 404 for an unknown name."""
        if not self.ready:
            raise Unavailable(f"not ready: {self.status}", headers={"Retry-After": str(self.settings.retry_after_s)})
        name = name or self.settings.default_model
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model '{name}'; available: {', '.join(sorted(self.models))}")
        return model

    async def close(self) -> None:
        """Drain every batcher: queued inputs still run, then the threads stop."""
        self._closing = True
        self.ready = False
        self.metrics.ready.set(0)
        await asyncio.gather(*(m.batcher.close() for m in self.models.values()))
