"""The load test's accounting, without a server: the CPU meter's counters and the report's gap section."""

import argparse
from pathlib import Path
from typing import Any

from tools.loadtest.__main__ import CpuMeter
from tools.loadtest.report import write_reports


class FakeServer:
    """Counters that grow by fixed amounts between two scrapes, as /metrics would."""

    url = "http://unused"

    def __init__(self) -> None:
        self.cpu = 10.0

    def cpu_seconds(self) -> float:
        return self.cpu


def test_meter_counts_model_run_audio_and_padding(monkeypatch: Any) -> None:
    scrapes = iter([
        "diffres_audio_seconds_total{model=\"k\"} 100.0\ndiffres_batch_samples_total{model=\"k\"} 1600000\n"
        "diffres_batch_padding_samples_total{model=\"k\"} 16000\n",
        "diffres_audio_seconds_total{model=\"k\"} 200.0\ndiffres_batch_samples_total{model=\"k\"} 4800000\n"
        "diffres_batch_padding_samples_total{model=\"k\"} 32000\n",
    ])
    monkeypatch.setattr("tools.loadtest.__main__.get", lambda url: next(scrapes).encode())
    server = FakeServer()
    meter = CpuMeter(server, sample_rate=16000)  # type: ignore[arg-type]

    def load() -> str:
        server.cpu += 50.0
        return "done"

    assert meter.measure(load) == "done"
    s = meter.summary()
    # 100 s uploaded; 3.2e6 samples sent = 200 s at 16 kHz, 1 s of it padding
    assert (s["server_audio_s"], s["model_run_s"], s["model_padding_s"]) == (100.0, 200.0, 1.0)
    assert s["model_run_per_audio_s"] == 2.0 and s["audio_s_per_cpu_s"] == 2.0


def _latency() -> dict[str, float]:
    return {"p50": 1.0, "p95": 2.0, "p99": 3.0}


def test_report_puts_overlap_and_cpu_in_the_gap(tmp_path: Path) -> None:
    args = argparse.Namespace(users=16, spawn_rate=16, run_time=60, rounds=1, model="keywords", long_fraction=0.1,
                              raw=False, inproc_seconds=40, seed=0, goal=0.85, out=tmp_path)
    total = {"requests": 10, "failures": 0, "requests_per_s": 80.0, "audio_s_per_s": 400.0, "latency_ms": _latency()}
    service = {"clip_source": "clips", "total": total, "rounds": [total]}
    rate = {"median": 800.0}
    slices = [{"audio_s_per_s": {"batch_16": rate, "batch_1": rate}, "concurrent_calls": 2, "intra_op_threads": 1}] * 2
    metrics = {"batches": 5, "mean_batch_size": 2.0, "padding_share": 0.01, "rejected_503": 0, "server_cpu_s": 100.0,
               "server_audio_s": 24000.0, "audio_s_per_cpu_s": 240.0, "model_run_s": 36000.0,
               "model_padding_s": 360.0, "model_run_per_audio_s": 1.5, "client_cpu_s": 4.0}
    machine = {"cpus": 2, "load_avg_before": [0.0, 0.0, 0.0], "model_version": "v", "model_sample_rate": 16000}
    result = write_reports(args, service, slices, metrics, 0.0, machine)
    assert result["ratio"] == 0.5 and result["model_run_audio_s_per_s"] == 600.0 and result["model_run_ratio"] == 0.75
    md = (tmp_path / "LOADTEST.md").read_text()
    assert "**0.75 of the ceiling**" in md and "400.0 per busy CPU" in md and "240.0" in md
