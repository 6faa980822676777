"""Prometheus metrics, on a registry owned by the app (several apps in one process do not collide).

Besides the service's own series: the process collector (RSS, CPU seconds, open files, start time),
`diffres_model_info` (1 per loaded model version: its build identity `version`, its repository
version and delta as labels), loads and unloads of model versions (server/registry.py) and events
per model and label. No `_created` series: they double every counter and histogram and nothing reads them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics,
                               generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from diffres.contract import ModelInfo
from diffres.server.batching import BatchStats

disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
PADDING_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75)


class Metrics:
    """Every metric the service exports; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("diffres_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("diffres_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_progress = Gauge("diffres_http_requests_in_progress",
                                 "HTTP requests being served (probes and /metrics excluded)", registry=r)
        self.queue_wait = Histogram("diffres_queue_wait_seconds", "Time an input waited for its batch",
                                    ["model"], buckets=WAIT_BUCKETS, registry=r)
        self.batch_size = Histogram("diffres_batch_size", "Inputs per onnxruntime call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.padding_share = Histogram("diffres_batch_padding_share",
                                       "Zero padding per onnxruntime call, as a share of its rows x padded length",
                                       ["model"], buckets=PADDING_BUCKETS, registry=r)
        self.batch_samples = Counter("diffres_batch_samples_total",
                                     "Samples sent to onnxruntime (rows x padded length)", ["model"], registry=r)
        self.batch_padding = Counter("diffres_batch_padding_samples_total",
                                     "Of diffres_batch_samples_total, zero padding", ["model"], registry=r)
        self.inference = Histogram("diffres_inference_seconds", "Duration of one onnxruntime call", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.inference_cpu = Counter("diffres_inference_cpu_seconds_total", "CPU time of onnxruntime session calls "
                                     "(the calling thread's: all of it with one intra-op thread per call, the "
                                     "default on CPU)", ["model"], registry=r)
        self.queue_depth = Gauge("diffres_queue_depth", "Inputs waiting for a batch", ["model"], registry=r)
        self.rejected = Counter("diffres_rejected_total", "Requests refused with 503 for lack of room, by reason "
                                "(queue: work units; long_jobs: long-job turns and their line full)",
                                ["model", "reason"], registry=r)
        self.audio_seconds = Counter("diffres_audio_seconds_total", "Seconds of uploaded audio classified",
                                     ["model"], registry=r)
        self.frames_in = Counter("diffres_frames_in_total", "Spectrogram frames entering DiffRes", ["model"],
                                 registry=r)
        self.frames_out = Counter("diffres_frames_out_total", "Frames the classifier saw after DiffRes",
                                  ["model"], registry=r)
        self.ready = Gauge("diffres_ready", "1 once every model is loaded and warmed up", registry=r)
        self.model_info = Gauge("diffres_model_info", "1 for each loaded model version: its build identity "
                                "(version), repository version and DiffRes delta",
                                ["model", "version", "delta", "repository_version"], registry=r)
        self.model_loads = Counter("diffres_model_loads_total", "Model versions loaded and checked (loaded), or "
                                   "refused (failed: the old version, if any, kept serving)", ["model", "outcome"],
                                   registry=r)
        self.model_load_seconds = Histogram("diffres_model_load_seconds", "Time to load, check and warm up one "
                                            "model version, by outcome", ["model", "outcome"],
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.model_unloads = Counter("diffres_model_unloads_total", "Model versions taken out of service, drained "
                                     "and released", ["model"], registry=r)
        self.model_drain_seconds = Histogram("diffres_model_drain_seconds", "From taking a version out of service "
                                             "to its last request or stream ending and its session being released",
                                             ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.events = Counter("diffres_events_total", "Events detected (uploads and streams), by model and label",
                              ["model", "label"], registry=r)
        ProcessCollector(registry=r)
        Gauge("diffres_process_id", "This server process's id: with DIFFRES_WORKERS > 1 each worker process answers "
              "/metrics for itself, and this tells them apart", registry=r).set(os.getpid())
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus_client's lookup takes a lock and checks the labels
        on every call (a few microseconds, several times per request). Not for metrics that get cleared."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_batch(self, model: str, stats: BatchStats, depth: int) -> None:
        child = self.child
        child(self.batch_size, model).observe(stats.size)
        child(self.padding_share, model).observe(stats.padding / stats.samples if stats.samples else 0.0)
        child(self.batch_samples, model).inc(stats.samples)
        child(self.batch_padding, model).inc(stats.padding)
        child(self.inference, model).observe(stats.run_seconds)
        queue_wait = child(self.queue_wait, model)
        for wait in stats.queue_waits:
            queue_wait.observe(wait)
        child(self.queue_depth, model).set(depth)

    def observe_result(self, model: str, audio_seconds: float, frames_in: int, frames_out: int) -> None:
        self.child(self.audio_seconds, model).inc(audio_seconds)
        self.child(self.frames_in, model).inc(frames_in)
        self.child(self.frames_out, model).inc(frames_out)

    def set_models(self, loaded: list[tuple[ModelInfo, int]]) -> None:
        """diffres_model_info for exactly the versions serving now (model info, repository version)."""
        self.model_info.clear()
        for info, version in loaded:
            self.model_info.labels(info.name, info.version, f"{info.delta:g}", str(version)).set(1)

    def observe_load(self, model: str, outcome: str, seconds: float) -> None:
        self.model_loads.labels(model, outcome).inc()
        self.model_load_seconds.labels(model, outcome).observe(seconds)

    def observe_unload(self, model: str, drain_seconds: float) -> None:
        self.model_unloads.labels(model).inc()
        self.model_drain_seconds.labels(model).observe(drain_seconds)

    def observe_events(self, model: str, labels: list[str]) -> None:
        for label in labels:
            self.child(self.events, model, label).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
