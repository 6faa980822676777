"""The benchmark package's plumbing on tiny hand-built ONNX graphs (seconds, no export, no timing
assertions): timing loop, windowing, memory probe, goals and the generated markdown."""

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from diffres.clock import interleaved, paired_ratio, summary
from tests.tiny_model import build as contract_model
from tools.bench import longrun, report, sections
from tools.bench.models import Exported


def tiny_frontend(path: Path, repeats: int = 1) -> Path:
    """waveform [B, N] -> [B, 1], not a contract graph (like the frontend alone): a mean, optionally
    after `repeats` element-wise squarings."""
    nodes, x = [], "waveform"
    for i in range(repeats):
        nodes.append(helper.make_node("Mul", [x, x], [f"sq{i}"]))
        x = f"sq{i}"
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes.append(helper.make_node("ReduceMean", [x, "axes"], ["logits"], keepdims=1))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["B", "N"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 1])], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))
    return path


def test_interleaved_takes_every_sample_and_pairs_ratios() -> None:
    calls = {"a": 0, "b": 0}

    def make(name: str):
        def fn() -> None:
            calls[name] += 1
        return fn

    times = interleaved({"a": make("a"), "b": make("b")}, repeats=4, warmup=1, sample_s=0.001)
    assert [len(v) for v in times.values()] == [4, 4] and all(t > 0 for v in times.values() for t in v)
    assert calls["a"] >= 5 and calls["b"] >= 5  # warm-up, then at least one call per sample
    assert paired_ratio([2.0, 4.0], [1.0, 2.0])["median"] == 2.0
    assert summary([3.0])["median"] == 3.0


def test_memory_probe_in_a_fresh_process(tmp_path: Path) -> None:
    path = str(contract_model(tmp_path / "tiny.onnx"))
    one = longrun.probe(path, 2.0, 1000, 1, repeats=2, ref_seconds=1.0)
    assert one["time_per_audio_s_vs_ref"]["n"] == 2 and one["peak_rss_mb"] >= one["baseline_max_rss_mb"] > 0
    assert one["peak_rss_mb"] < 400  # a fresh process: not the (torch-sized) parent's high-water mark
    win = longrun.windowed(path, 10.0, 1000, 1, window_s=1.0, overlap=0.5, batch=4)
    assert win["windows"] == 19 and win["time_per_audio_s"] > 0


def test_report_goals_markdown_and_loadtest(tmp_path: Path) -> None:
    models = [Exported(name, contract_model(tmp_path / f"{i}.onnx"), {}, None)
              for i, name in enumerate(["full", "diffres-0.5-est16x2"])]
    models.append(Exported("frontend", tiny_frontend(tmp_path / "frontend.onnx"), {}, None))
    through = sections.throughput(models, [1, 2], 0.5, 1000, 1, repeats=2, sample_s=0.001)
    assert set(through["2"]["diffres-0.5-est16x2"]) >= {"speedup_vs_full", "frontend_share", "audio_s_per_s"}
    long = {"single_call": [longrun.single_call(str(models[1].path), 600.0, 100, 1, 2, 10.0)]}
    (tmp_path / "loadtest.json").write_text(json.dumps({
        "when": "2026-01-01", "service": {"total": {"audio_s_per_s": 850.0}}, "ratio": 0.87, "ratio_vs_batch_1": 1.1,
        "in_process": {"ceiling_audio_s_per_s": 977.0, "batch_1_audio_s_per_s": 757.0}, "padding_share": 0.04,
        "server_metrics": {"mean_batch_size": 9.5, "server_rss_mb": [180.0, 240.0]}, "goal": 0.85, "goal_met": True}))
    r = {"command": "python -m tools.bench --quick", "environment": {
            "date": "now", "cpu_model": "cpu", "cpus_usable": 2, "mem_total_gib": 1.0, "onnxruntime": "x",
            "torch": "x", "python": "3", "git": "g", "load_average_at_start": [0.0]},
         "settings": {"json": "reports/bench.json", "quick": True, "model_config": "tiny", "threads": 2,
                      "layout_threads": 1,
                      "repeats": 2, "sample_seconds": 0.001, "clip_seconds": 0.5, "long_delta": 0.5},
         "throughput": through, "service_layout": through, "long_inputs": long,
         "loadtest": report.loadtest_summary(tmp_path / "loadtest.json"),
         "duration_s": 1.0}
    r["goals"] = report.goals(r)
    names = [g["goal"] for g in r["goals"]]
    assert any("delta 0.5, batch 2 (2-thread calls)" in n for n in names)
    assert any("delta 0.5, batch 2 (service layout: 1-thread calls)" in n for n in names)
    assert any("10 min over 10 s" in n for n in names)
    assert any("peak RSS" in n for n in names)
    md = report.markdown(r)
    assert md.startswith("# Benchmarks") and "make bench" in md
    assert "## 1c. In the service's call layout (1-thread calls)" in md
    assert "Service / ceiling: **0.87** (goal >= 0.85: met); service / batch 1: 1.1; padding 4.0 %" in md
    assert report.loadtest_summary(tmp_path / "absent.json")["note"] == "run `make loadtest`"


def test_bench_centres_on_the_shipped_estimator() -> None:
    """Eager, long-input and profile sections run the shipped DiffRes (ModelConfig's estimator size),
    and a quick run times it next to full resolution."""
    from diffres.train.config import ModelConfig
    from tools.bench.__main__ import PROFILED, SHIPPED, parse_args

    cfg = ModelConfig()
    assert SHIPPED == f"diffres-0.5-est{cfg.estimator_channels}x{cfg.estimator_blocks}" and SHIPPED in PROFILED
    assert parse_args(["--quick"]).variants == ["full", SHIPPED]
