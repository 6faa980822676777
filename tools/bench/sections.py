"""The in-process measurements: ORT throughput per resolution (frontend share from the same
rounds), PyTorch eager vs ORT, and an onnxruntime profile of where the time goes."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from diffres.clock import interleaved, paired_ratio, summary
from diffres.contract import WAVEFORM
from diffres.runner import OnnxModel
from diffres.session import make_session

from .models import RESOLUTION_INPUTS, Exported


def clips(batch: int, seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((batch, int(seconds * sr)))).astype(np.float32)


def throughput(models: list[Exported], batches: list[int], seconds: float, sr: int, threads: int,
               repeats: int, sample_s: float) -> dict:
    """All models (and the frontend alone) in one interleaved loop per batch size.

    Speed-ups and the frontend share are per-round ratios against "full" (and the frontend share
    also against DiffRes at each delta), so they are paired measurements.
    """
    runners = {m.name: runner(m, threads) for m in models}
    out: dict = {}
    for batch in batches:
        x = clips(batch, seconds, sr)
        fns = {name: (lambda r=r: r(x)) for name, r in runners.items()}
        times = interleaved(fns, repeats, sample_s=sample_s)
        rows = {}
        for name, ts in times.items():
            row = {"time_per_call_s": summary(ts),
                   "audio_s_per_s": summary([batch * seconds / t for t in ts]),
                   "clips_per_s": summary([batch / t for t in ts])}
            if name not in ("full", "frontend"):
                row["speedup_vs_full"] = paired_ratio(times["full"], ts)
            row |= time_vs_avgpool(name, times)
            if name != "frontend":
                row["frontend_share"] = paired_ratio(times["frontend"], ts)
            rows[name] = row
        out[str(batch)] = rows
    return out


def resolution_alone(models: list[Exported], batches: list[int], frames: int, n_mels: int, threads: int,
                     repeats: int, sample_s: float) -> dict:
    """Each resolution module alone on log-mel input, unprofiled, in one interleaved loop per batch size:
    what its own code costs per call. The profiler (section 4) adds a fixed cost to every node, so it
    overstates small ops, and a module of many small ops most."""
    sessions = {m.name: make_session(m.path, providers=["CPUExecutionProvider"], intra_op_threads=threads)
                for m in models}
    out: dict = {}
    for batch in batches:
        feed = dict(zip(RESOLUTION_INPUTS, (np.random.default_rng(0).standard_normal((batch, frames, n_mels)).astype(
            np.float32), np.full(batch, frames, np.int64))))
        times = interleaved({name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}, repeats,
                            sample_s=sample_s)
        out[str(batch)] = {name: {"time_per_call_s": summary(ts)} | time_vs_avgpool(name, times)
                           for name, ts in times.items()}
    return out


def time_vs_avgpool(name: str, times: dict[str, list[float]]) -> dict:
    """DiffRes's price over pooling to the same frames (a paired ratio), when both were timed."""
    pool = "avgpool-" + name.split("-")[1] if name.startswith("diffres-") else ""
    return {"time_vs_avgpool": paired_ratio(times[name], times[pool])} if pool in times else {}


def runner(m: Exported, threads: int, profile_prefix: str | None = None) -> Callable[[np.ndarray], object]:
    """One call on a full-length batch: contract models through OnnxModel (lengths = every row full),
    the frontend alone (not a contract graph) on its session."""
    session = make_session(m.path, providers=["CPUExecutionProvider"], intra_op_threads=threads,
                           profile_prefix=profile_prefix)
    if m.name == "frontend":
        return lambda x: session.run(None, {WAVEFORM: x})
    model = OnnxModel(session, m.name)
    return lambda x: model.run_padded(x)


def eager_vs_ort(model: Exported, seconds: float, sr: int, threads: int, repeats: int, sample_s: float) -> dict:
    """Batch 1: the PyTorch module (no_grad, `threads` intra-op threads) against its own ONNX export."""
    torch.set_num_threads(threads)
    run = runner(model, threads)
    x = clips(1, seconds, sr)
    xt = torch.from_numpy(x)

    def eager() -> None:
        with torch.no_grad():
            model.model(xt)

    times = interleaved({"torch_eager": eager, "onnxruntime": lambda: run(x)},
                        repeats, sample_s=sample_s)
    return {"model": model.name, "batch": 1, "seconds": seconds, "torch_threads": torch.get_num_threads(),
            "torch_eager_s": summary(times["torch_eager"]), "onnxruntime_s": summary(times["onnxruntime"]),
            "ort_speedup": paired_ratio(times["torch_eager"], times["onnxruntime"])}


def node_stages(path: Path) -> dict[str, str]:
    """ONNX node name (and each node's output names) -> model stage, from the dynamo exporter's name
    scopes: 'mel', 'compress', 'resolution.estimator', 'resolution.warp' (normalisation and warp:
    DiffRes's or the pooling baselines' own code), 'backbone.stem', 'backbone.stages.N',
    'backbone.head', 'backbone.pooling' (the backbone's own code: padding masks and pooling)."""
    stages = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = [s for s in json.loads(meta.get("pkg.torch.onnx.name_scopes", "[]").replace("'", '"')) if s]
        except json.JSONDecodeError:
            scopes = []
        modules = scopes[:-1]  # full dotted module paths, outermost first; the last scope is the op
        if not modules or modules[0].startswith("_"):
            stage = "other (shapes)"
        elif modules[0] in ("resolution", "backbone"):  # submodules by name, the module's own code as one
            own = "resolution.warp" if modules[0] == "resolution" else "backbone.pooling"
            stage = modules[1] if len(modules) > 1 else own
        else:
            stage = modules[0]
        stages[node.name] = stage
        for name in node.output:  # onnxruntime names some fused/NCHWc nodes after their output
            stages.setdefault(name, stage)
    return stages


def profile(model: Exported, batch: int, seconds: float, sr: int, threads: int, runs: int, tmp: Path) -> dict:
    """Kernel time by op type and by model stage, from onnxruntime's profiler (a separate session:
    profiling slows every call, so these are shares, not timings), summed over the profiled runs."""
    session = make_session(model.path, providers=["CPUExecutionProvider"], intra_op_threads=threads,
                           profile_prefix=str(tmp / f"profile_{model.name}_{batch}"))
    onnx_model = OnnxModel(session, model.name)
    x = clips(batch, seconds, sr)
    for _ in range(3):  # warm-up: its events are dropped below
        onnx_model.run_padded(x)
    for _ in range(runs):
        onnx_model.run_padded(x)
    profile_path = Path(session.end_profiling())
    events = json.loads(profile_path.read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start = runs_seen[-runs]["ts"] if len(runs_seen) >= runs else 0
    stages = node_stages(model.path)
    durations: dict[str, list[float]] = defaultdict(list)
    op_type: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start:
            continue
        node = e["name"][: -len("_kernel_time")]
        durations[node].append(e["dur"])
        op_type[node] = e.get("args", {}).get("op_name", "?")
    by_op: dict[str, float] = defaultdict(float)
    by_stage: dict[str, float] = defaultdict(float)
    for node, durs in durations.items():
        # what the runs actually spent: per-node minima or medians, tried as noise filters, disagreed
        # with each other by 2-3x on a loaded machine (a long op is preempted more often)
        spent = sum(durs)
        by_op[op_type[node]] += spent
        by_stage[stage_of(node, stages)] += spent
    total = sum(by_op.values()) or 1.0
    run_total = sum(e["dur"] for e in runs_seen[-runs:]) or 1.0
    os.remove(profile_path)
    return {"model": model.name, "batch": batch, "seconds": seconds, "runs": runs,
            "kernel_share_of_run": total / run_total,  # the rest is the executor's own overhead
            "by_op_type": {k: v / total for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "by_stage": {k: v / total for k, v in sorted(by_stage.items(), key=lambda kv: -kv[1])}}


def stage_of(node: str, stages: dict[str, str]) -> str:
    """onnxruntime renames nodes it fuses or converts to its blocked layout ('relu_4_nchwc',
    'node_matmul/MatmulTransposeFusion/'); map those back to the original node or output."""
    if node.startswith(("ReorderInput", "ReorderOutput")):
        return "layout reorder"
    for key in (node, node.split("/")[0], node.removesuffix("_nchwc")):
        if key in stages:
            return stages[key]
    return "unattributed"
