"""Mirror the app's own Prometheus metrics into Ray's, so every replica's counts reach one endpoint.

Through Ray, `GET /metrics` answers from whichever replica the proxy picks; Ray's metrics endpoint
(`DIFFRES_RAY_METRICS_PORT`) shows all replicas, each tagged `replica=...` by Ray Serve. Counters
and gauges are copied as they are; histograms as their cumulative `_count` and `_sum` (Ray cannot
take pre-aggregated buckets; it has its own per-replica latency histograms). Exported names gain
Ray's `ray_` prefix: `diffres_frames_in_total` appears as `ray_diffres_frames_in_total`.
Imports ray: only the Ray entry modules use it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from ray.serve import metrics as serve_metrics

LabelKey = tuple[tuple[str, str], ...]


class MetricsMirror:
    """Copies a prometheus_client registry into ray.serve.metrics on every `sync()` (counters as deltas)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._counters: dict[str, serve_metrics.Counter] = {}
        self._gauges: dict[str, serve_metrics.Gauge] = {}
        self._last: dict[tuple[str, LabelKey], float] = {}

    def sync(self) -> None:
        for family in self.registry.collect():
            for sample in family.samples:
                if family.type == "gauge":
                    self._set_gauge(sample.name, family.documentation, sample.labels, sample.value)
                elif family.type == "counter" and sample.name.endswith("_total"):
                    self._add(sample.name.removesuffix("_total"), family.documentation, sample.labels, sample.value)
                elif family.type == "histogram" and sample.name.endswith(("_count", "_sum")):
                    # A gauge keeps the name (a Ray counter would add `_total`); the value is cumulative.
                    self._set_gauge(sample.name, f"{family.documentation} ({sample.name.rsplit('_', 1)[1]})",
                                    sample.labels, sample.value)

    def _add(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        """Increase Ray's counter by what the app's counter gained since the last sync."""
        key = (name, tuple(sorted(labels.items())))
        delta = value - self._last.get(key, 0.0)
        self._last[key] = value
        if delta <= 0:
            return
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = serve_metrics.Counter(name, doc, tag_keys=tuple(sorted(labels)))
        counter.inc(delta, tags=dict(labels) or None)

    def _set_gauge(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = serve_metrics.Gauge(name, doc, tag_keys=tuple(sorted(labels)))
        gauge.set(value, tags=dict(labels) or None)
