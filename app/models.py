"""Model registry: one onnxruntime session, its metadata, window plan and micro-batcher per *.onnx file.

Loading and warm-up run in a thread after the server starts, so /healthz answers at once while
/readyz stays 503 until every session has run once (first calls allocate and are slow).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from app.batching import MicroBatcher
from app.config import Settings
from runtime.cpu import available_cpus
from app.errors import ModelNotFound, Unavailable
from app.metrics import Metrics

log = logging.getLogger("app.models")

INPUT = "waveform"
OUTPUTS = ("logits", "importance", "frames_in", "frames_out")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


class ModelLoadError(Exception):
    """A model file that cannot be served (bad metadata, wrong inputs)."""


@dataclass(frozen=True)
class ModelInfo:
    """The export contract's metadata_props, parsed and checked."""

    name: str
    path: Path
    labels: tuple[str, ...]
    sample_rate: int
    delta: float | None
    hop_ms: float
    win_ms: float
    n_mels: int | None
    clip_seconds: float
    frontend: str | None
    resolution: str | None
    version: str

    @classmethod
    def from_metadata(cls, name: str, path: Path, meta: dict[str, str]) -> ModelInfo:
        try:
            labels = json.loads(meta["labels"])
            sample_rate = int(meta["sample_rate"])
        except (KeyError, ValueError) as exc:
            raise ModelLoadError(f"{path}: metadata needs 'labels' (JSON list) and 'sample_rate': {exc}") from exc
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ModelLoadError(f"{path}: 'labels' must be a non-empty JSON list of strings")
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise ModelLoadError(f"{path}: sample_rate {sample_rate} out of range")

        def number(key: str, default: float | None) -> float | None:
            try:
                return float(meta[key]) if key in meta else default
            except ValueError as exc:
                raise ModelLoadError(f"{path}: metadata '{key}' is not a number") from exc

        n_mels = number("n_mels", None)
        return cls(name=name, path=path, labels=tuple(labels), sample_rate=sample_rate,
                   delta=number("delta", None), hop_ms=number("hop_ms", 10.0) or 10.0,
                   win_ms=number("win_ms", 25.0) or 25.0, n_mels=int(n_mels) if n_mels else None,
                   clip_seconds=number("clip_seconds", 1.0) or 1.0, frontend=meta.get("frontend"),
                   resolution=meta.get("resolution"), version=meta.get("version", "unknown"))


@dataclass(frozen=True)
class WindowPlan:
    """How this model's audio is windowed, in model-rate samples."""

    window: int
    hop: int
    long_threshold: int  # longer audio is windowed
    frame_hop: int  # samples per spectrogram frame (importance grid)
    min_duration_s: float

    @classmethod
    def for_model(cls, info: ModelInfo, settings: Settings) -> WindowPlan:
        sr = info.sample_rate
        frame_hop = max(1, round(info.hop_ms * sr / 1000))
        window_s = settings.window_s or info.clip_seconds
        window = max(frame_hop, round(window_s * sr))
        # The hop is a whole number of frames, so the windows' importance curves line up on one grid.
        hop_s = settings.window_hop_s or window_s / 2
        hop = min(window, max(frame_hop, round(hop_s * sr / frame_hop) * frame_hop))
        long_s = settings.long_audio_s or 3 * info.clip_seconds
        min_s = settings.min_duration_s if settings.min_duration_s is not None else info.win_ms / 1000
        return cls(window=window, hop=hop, long_threshold=max(window, round(long_s * sr)),
                   frame_hop=frame_hop, min_duration_s=min_s)


@dataclass
class ModelOutput:
    """One row of the model's four outputs."""

    logits: np.ndarray
    importance: np.ndarray
    frames_in: int
    frames_out: int


def resolve_providers(requested: list[str], available: list[str]) -> list[str]:
    """Requested providers that exist (CPU as last resort); by default CUDA first when installed."""
    if requested:
        chosen = [p for p in requested if p in available]
        for missing in set(requested) - set(chosen):
            log.warning("execution provider %s is not available (have %s); skipped", missing, available)
    else:
        chosen = [p for p in (CUDA,) if p in available]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def make_session(path: Path, settings: Settings) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads or available_cpus()
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = resolve_providers(settings.providers, ort.get_available_providers())
    return ort.InferenceSession(str(path), options, providers=providers)


class LoadedModel:
    """A session ready to serve: metadata, window plan and its own micro-batcher."""

    def __init__(self, info: ModelInfo, session: ort.InferenceSession, settings: Settings, metrics: Metrics) -> None:
        self.info = info
        self.session = session
        self.plan = WindowPlan.for_model(info, settings)
        names = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if names != [INPUT] or any(o not in outputs for o in OUTPUTS):
            raise ModelLoadError(f"{info.path}: expected input {INPUT} and outputs {OUTPUTS}, got {names} -> {outputs}")
        self.batcher: MicroBatcher[ModelOutput] = MicroBatcher(
            info.name, self.run_batch, max_batch=settings.batch_size, max_wait_s=settings.batch_wait_ms / 1000,
            queue_limit=settings.queue_limit, retry_after_s=settings.retry_after_s,
            on_batch=lambda stats: metrics.observe_batch(info.name, stats, self.batcher.depth),
            on_reject=metrics.rejected.labels(info.name).inc)

    @property
    def name(self) -> str:
        return self.info.name

    def run_batch(self, waveform: np.ndarray) -> list[ModelOutput]:
        """One session call on [batch, samples]; split into per-row outputs. Runs in the batcher thread."""
        logits, importance, frames_in, frames_out = self.session.run(list(OUTPUTS), {INPUT: waveform})
        if logits.shape[1] != len(self.info.labels):
            raise RuntimeError(f"model {self.name} gave {logits.shape[1]} logits for {len(self.info.labels)} labels")
        return [ModelOutput(logits[i], importance[i], int(frames_in[i]), int(frames_out[i]))
                for i in range(len(waveform))]

    def warm_up(self, batch_size: int) -> None:
        """First calls allocate arenas and pick kernels; pay that before taking traffic."""
        rng = np.random.default_rng(0)
        for rows in sorted({1, batch_size}):
            x = (0.01 * rng.standard_normal((rows, self.plan.window))).astype(np.float32)
            self.run_batch(x)


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
                session = make_session(path, self.settings)
                info = ModelInfo.from_metadata(path.stem, path, session.get_modelmeta().custom_metadata_map)
                model = LoadedModel(info, session, self.settings, self.metrics)
                if self.settings.warmup:
                    model.warm_up(self.settings.batch_size)
            except Exception as exc:  # one bad file must not take the others down
                log.error("model %s not loaded: %s", path, exc)
                self.failed[path.stem] = str(exc)
                continue
            log.info("model %s loaded: %d labels, %d Hz, providers %s, version %s", info.name, len(info.labels),
                     info.sample_rate, session.get_providers(), info.version)
            loaded.append(model)
        return loaded

    async def start(self) -> None:
        """Load and warm up off the event loop; flip readiness when done."""
        try:
            loaded = await asyncio.to_thread(self._load_all)
        except Exception as exc:
            log.exception("loading models failed")
            self.status = f"loading models failed: {exc}"
            return
        if self._closing:
            return
        for model in loaded:
            model.batcher.start()
            self.models[model.name] = model
        if not self.models:
            self.status = f"no model could be loaded from {self.settings.model_dir}"
            log.error(self.status)
            return
        if self.settings.default_model not in self.models:
            log.warning("default model %s is not loaded; requests must name a model", self.settings.default_model)
        self.ready = True
        self.status = "ready"
        self.metrics.ready.set(1)
        self._ready_event.set()

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
