"""One loaded model version: its OnnxModel, its pipeline (window plan, limits) and its own micro-batcher,
how it is loaded and checked (a probe inference, warm-up), how it classifies a request, and how it is released.

The registry (server/registry.py) decides which versions serve; this is what each of them is.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import io
import logging
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffres.contract import ContractError
from diffres.cpu import available_cpus
from diffres.errors import DiffresError
from diffres.pipeline import OUTPUTS, AudioSource, Classification, ClassifyOptions, Opened, Pipeline
from diffres.runner import DEFAULT_OUTPUTS, OnnxModel, RowOutput
from diffres.schemas import ClassifyResult
from diffres.session import uses_gpu
from diffres.windows import WindowPlan
from diffres.server.admission import row_units
from diffres.server.batch_policy import BatchPolicy, LengthGrid
from diffres.server.batching import Lease, LeaseRunner, MicroBatcher
from diffres.server.config import Settings
from diffres.server.metrics import Metrics
from diffres.server.repository import Stamp, VersionFile
from diffres.server.threads import run_to_completion

log = logging.getLogger(__name__)

# In-memory uploads up to this size are opened (and, when they run whole, decoded) on the event loop: a hop to
# a worker thread costs about 0.75 ms of CPU under load, more than decoding such a clip does (both measured by
# tools/loadtest/floor.py, docs/performance.md). What is decoded there is bounded twice: by these bytes, and by
# the long-audio threshold (longer audio only has its header read there, and goes on in a worker thread).
INLINE_BYTES = 256 * 1024


def decodes_inline(source: AudioSource) -> bool:
    """Whether `source` is opened and decoded on the event loop (INLINE_BYTES says why)."""
    return isinstance(source, io.BytesIO) and len(source.getbuffer()) <= INLINE_BYTES


class LoadFailed(DiffresError):
    """A model the repository API was asked to load was refused (whatever served before keeps serving)."""

    code, status = "load_failed", 400


LOAD_PARAMETERS = frozenset({"unload_dependents"})  # Triton's parameters that mean nothing here but are harmless


def check_parameters(names: Collection[str]) -> None:
    """The repository API loads what the repository holds: Triton's `config` and file overrides are refused."""
    if unknown := sorted(set(names) - LOAD_PARAMETERS):
        raise LoadFailed(f"parameters {', '.join(unknown)} are not supported: put the model and its config.pbtxt "
                         "into the repository, then load it", code="unsupported_parameters")


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
    """One version of a model, ready to serve: OnnxModel, its pipeline (window plan, limits) and its own
    micro-batcher; `hold` keeps it for a request's or a stream's whole life."""

    def __init__(self, model: OnnxModel, settings: Settings, metrics: Metrics, layout: CallLayout,
                 version: int = 1, stamp: Stamp | None = None) -> None:
        self.layout = layout
        self.model = model
        self.info = model.info
        self.version = version  # the repository's version number
        self.stamp = stamp  # the file it was loaded from, as it was then (a changed file is reloaded)
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
        self._inference_cpu = metrics.inference_cpu.labels(self.info.name)
        self._holders = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def name(self) -> str:
        return self.info.name

    @contextmanager
    def hold(self) -> Iterator[LoadedModel]:
        """This version for as long as the block runs: unloading it waits until nobody holds it, so a request
        or stream finishes on the version it started with. Take it right after `ModelRegistry.get` (no await
        between: the version cannot be retired in that gap)."""
        self._holders += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self._holders -= 1
            if not self._holders:
                self._idle.set()

    async def admit(self, samples: int | None) -> Lease:
        """The lease for a clip of `samples` (model rate; None: the header does not say, so maybe long).

        Long audio waits for a long-job turn and holds windows; a clip that runs whole holds the
        work units of its one row. 503 at once when there is no room (server/admission.py).
        """
        if samples is None or self.plan.is_long(samples):
            return await self.batcher.long_lease()
        return self.batcher.lease(1, row_units(samples, self.plan.window))

    async def classify(self, source: AudioSource, options: ClassifyOptions, started: float) -> ClassifyResult:
        """The pipeline with its rows through this model's batcher. A clip that runs whole is opened, checked
        and decoded in one step: on the event loop for a small in-memory upload (`decodes_inline`), else in
        one worker-thread hop; the event loop then takes the lease (503 when there is no room), runs the row
        through the batcher and builds the answer (no decoding is left, only arithmetic). Long audio (by its
        header, or a header that says nothing) waits for a long-job turn and is decoded and classified in a
        worker thread window by window (LeaseRunner), so the event loop never decodes it."""
        self.batcher.check_admission()  # full: 503 before any work (the lease below decides for real)
        if decodes_inline(source):
            started_run = self._start(source, options, started)
        else:
            started_run = await run_to_completion(self._start, source, options, started)
        if isinstance(started_run, Opened):  # long
            result = await self._classify_long(started_run, options)
        else:
            run, rows = started_run
            try:
                result = await self._classify_whole(run, rows)
            finally:
                run.close()
        result.repository_version = self.version
        self.metrics.observe_result(self.name, result.duration_s, result.frames.input, result.frames.output)
        if result.events:
            self.metrics.observe_events(self.name, [e.label for e in result.events])
        return result

    def _start(self, source: AudioSource, options: ClassifyOptions, started: float
               ) -> Opened | tuple[Classification, list[np.ndarray]]:
        """Open and check the header; a clip that runs whole is decoded too (its rows are ready), long audio is
        only opened."""
        opened = self.pipeline.open(source, started=started)
        samples = opened.samples_at(self.info.sample_rate)
        if samples is None or self.plan.is_long(samples):
            return opened
        try:
            run = self.pipeline.start(opened, options, slots=1)
            return run, run.rows()
        except BaseException:
            opened.close()
            raise

    async def _classify_whole(self, run: Classification, rows: list[np.ndarray]) -> ClassifyResult:
        """A decoded clip: lease, its row through the batcher, the answer; all on the event loop. A header
        that promised a clip but audio that goes on (so it is windowed) continues in a worker thread."""
        samples = run.opened.samples_at(self.info.sample_rate) or 0
        with self.batcher.lease(1, row_units(samples, self.plan.window)) as lease:
            while rows and run.decoded:
                run.add(await lease.run(rows, OUTPUTS))
                rows = run.rows()  # decodes nothing: the audio is over
            if rows:  # not decoded to its end: a longer file than its header said
                runner = LeaseRunner(lease, asyncio.get_running_loop())
                return await run_to_completion(run.finish, runner, rows, on_cancel=runner.cancel)
            return run.result()

    async def _classify_long(self, opened: Opened, options: ClassifyOptions) -> ClassifyResult:
        with opened, await self.admit(opened.samples_at(self.info.sample_rate)) as lease:
            runner = LeaseRunner(lease, asyncio.get_running_loop())
            return await run_to_completion(self.pipeline.classify, opened, runner, options, on_cancel=runner.cancel)

    def run_batch(self, rows: list[np.ndarray], pad_to: int, outputs: Sequence[str]) -> list[RowOutput]:
        """One session call (runs in the batcher thread), its CPU time counted (diffres_inference_cpu_seconds_total:
        what onnxruntime costs, against the process's CPU)."""
        return self.model.run(rows, outputs, pad_to=pad_to, on_cpu=self._inference_cpu.inc)

    def probe(self) -> None:
        """One row of noise through the session as requests run it: the contract's outputs, finite, before
        the version may take traffic (a graph that loads but cannot answer is refused here)."""
        row = (0.05 * np.random.default_rng(0).standard_normal(self.plan.window)).astype(np.float32)
        (out,) = self.model.run([row], DEFAULT_OUTPUTS, pad_to=self.plan.window)
        labels = len(self.info.labels)
        if out.logits is None or out.logits.shape != (labels,) or not np.isfinite(out.logits).all():
            raise ContractError(f"model '{self.name}': the probe inference gave no {labels} finite logits")
        if not 0 < out.frames_out <= out.frames_in:
            raise ContractError(f"model '{self.name}': the probe inference gave frames {out.frames_in} -> "
                                f"{out.frames_out}")

    def warm_up(self) -> None:
        """Full batches of windows, and one row of the window's length: the shapes traffic hits most."""
        for rows in sorted({1, self.policy.max_batch}):
            self.model.run([np.zeros(self.plan.window, np.float32)] * rows, pad_to=self.plan.window)

    async def retire(self) -> None:
        """Out of service: wait for every holder, drain and close the batcher, release the session."""
        await self._idle.wait()
        await self.batcher.close()
        self.model.session = None  # type: ignore[assignment]  # nothing can call it now: its memory goes back


def load_model(path: Path, settings: Settings, metrics: Metrics, name: str | None = None, version: int = 1,
               stamp: Stamp | None = None) -> LoadedModel:
    layout = layout_here(settings)
    model = OnnxModel.load(path, name=name, providers=settings.providers, intra_op_threads=layout.threads,
                           inter_op_threads=settings.inter_op_threads, spinning=settings.ort_spinning)
    return LoadedModel(model, settings, metrics, layout, version, stamp)


def load_checked(file: VersionFile, name: str, settings: Settings, metrics: Metrics) -> LoadedModel:
    """One version loaded beside the others and checked before it may take traffic: the contract (graph
    tensors and metadata, OnnxModel), a probe inference, then warm-up. Runs in a worker thread."""
    model = load_model(file.path, settings, metrics, name=name, version=file.version, stamp=file.stamp)
    model.probe()
    if settings.warmup:
        model.warm_up()
    return model


def public_reason(exc: Exception, path: Path) -> str:
    """Why a model failed, for probes: the error's first line with the file's folder left out."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for where in (str(path.resolve().parent), str(path.parent)):
        if where and where != ".":
            text = text.replace(where + "/", "").replace(where, "")
    return f"{type(exc).__name__}: {text}"[:300]


def release_memory() -> None:
    """After a session is dropped: collect the cycles that still hold it, and hand freed heap back to the
    system (glibc keeps it otherwise, and RSS would never come down)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
