"""Reproduce the paper's comparison on our data: DiffRes vs full resolution and fixed pooling.

    python -m model.compare --data ../shared/data/keywords ../shared/data/digits --out reports/compare

Trains every variant x seed on each dataset (speaker held out where names carry speakers), then
writes RESULTS.md, results.json and a figure. Resumable: each finished run leaves a small JSON in
OUT/runs/<dataset>/<variant>/seed<k>.json (committed with the report) and is skipped next time;
checkpoints go to --checkpoints, runs/compare/ (not committed). Budget: see EPOCHS; chosen for a 2-core CPU.
Two workers on different datasets or seeds with --threads 1 share the 2 cores; --report-only re-summarises.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import FrontendConfig, ModelConfig, TrainConfig
from .data import native_sample_rate, scan_audio_folder

EPOCHS = {"keywords": 8, "digits": 20}  # per dataset: ~2-6 min a run on 2 cores
DEFAULT_EPOCHS = 10


@dataclass(frozen=True)
class Variant:
    name: str
    resolution: str
    delta: float
    hop_ms: float = 10.0
    compression: str = "log"


VARIANTS = [
    Variant("full", "full", 0.0),
    Variant("diffres-0.25", "diffres", 0.25),
    Variant("diffres-0.5", "diffres", 0.5),
    Variant("diffres-0.75", "diffres", 0.75),
    Variant("avgpool-0.5", "avgpool", 0.5),
    Variant("avgpool-0.75", "avgpool", 0.75),
    Variant("avgmaxpool-0.5", "avgmaxpool", 0.5),
    Variant("avgmaxpool-0.75", "avgmaxpool", 0.75),
    Variant("changehop-0.5", "changehop", 0.5),
    Variant("changehop-0.75", "changehop", 0.75),
    # 2.5 ms hop = 4x the frames; DiffRes 0.75 hands the backbone as many as full resolution at 10 ms
    Variant("highres-2.5ms-diffres-0.75", "diffres", 0.75, hop_ms=2.5),
    Variant("full-loglearn", "full", 0.0, compression="loglearn"),
    Variant("diffres-0.5-loglearn", "diffres", 0.5, compression="loglearn"),
]
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}
# (variant, reference, why the pair matters)
PAIRS = [(v.name, "full", "vs full resolution") for v in VARIANTS[1:11]] + [
    ("diffres-0.5", "avgpool-0.5", "vs pooling, same frames"), ("diffres-0.5", "avgmaxpool-0.5", "vs pooling, same frames"),
    ("diffres-0.5", "changehop-0.5", "vs longer hop, same frames"), ("diffres-0.75", "avgpool-0.75", "vs pooling, same frames"),
    ("diffres-0.75", "avgmaxpool-0.75", "vs pooling, same frames"), ("diffres-0.75", "changehop-0.75", "vs longer hop, same frames"),
    ("full-loglearn", "full", "log-learn vs log"), ("diffres-0.5-loglearn", "diffres-0.5", "log-learn vs log"),
]


def run_dir(out: Path, dataset: str, variant: str) -> Path:
    """Where a variant's finished runs leave seed<k>.json: the record that makes the command resumable."""
    return out / "runs" / dataset / variant


def model_config(v: Variant, sample_rate: int) -> ModelConfig:
    front = FrontendConfig(sample_rate=sample_rate, hop_ms=v.hop_ms, compression=v.compression)
    return ModelConfig(frontend=front, resolution=v.resolution, delta=v.delta)


def run_one(data: Path, v: Variant, seed: int, epochs: int, result_path: Path, checkpoints: Path,
            threads: int = 0) -> dict:
    from .train import train  # torch import deferred: --report-only works without training

    sr = native_sample_rate(scan_audio_folder(data)[0])
    tcfg = TrainConfig(data=str(data), out=str(checkpoints / data.name / v.name / f"seed{seed}"), epochs=epochs, seed=seed,
                       threads=threads)
    metrics = train(tcfg, model_config(v, sr))
    result = {k: metrics[k] for k in ("val_accuracy", "mean_frames_in", "mean_frames_out", "activeness",
                                      "best_epoch", "wall_time_s", "split", "clip_seconds", "epochs")}
    result.update(dataset=data.name, variant=asdict(v), seed=seed, threads=threads or "torch default")
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2))
    return result


def ort_throughput(v: Variant, sample_rate: int, n_classes: int, repeats: int = 9, batch: int = 8) -> float:
    """Clips/s of the exported variant on 3 s clips, batch 8, 2 threads (median of repeats)."""
    import onnxruntime as ort

    from export.onnx_export import export_onnx
    from .classifier import AudioClassifier

    cfg = model_config(v, sample_rate)
    cfg.n_classes = n_classes
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/m.onnx"
        export_onnx(AudioClassifier(cfg).eval(), path, {})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    wave = (0.1 * np.random.default_rng(0).standard_normal((batch, 3 * sample_rate))).astype(np.float32)
    for _ in range(3):
        sess.run(["logits"], {"waveform": wave})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(["logits"], {"waveform": wave})
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[str, float, float, int, int]:
    """Verdict on the seeds both ran (same split, so speaker difficulty cancels): wins / ties / loses.

    A mean paired difference within the differences' std, or under 0.5 points, is a tie.
    Returns (verdict, mean difference, its std, seeds where a is ahead, seeds compared).
    """
    diffs = [a[s] - b[s] for s in sorted(a.keys() & b.keys())]
    mean, std = statistics.mean(diffs), statistics.pstdev(diffs)
    result = "ties" if abs(mean) <= max(0.005, std) else ("wins" if mean > 0 else "loses")
    return result, mean, std, sum(d > 0 for d in diffs), len(diffs)


def summarize(out: Path, datasets: list[str], throughput: dict) -> dict:
    summary: dict = {"datasets": {}, "budget_epochs": EPOCHS}
    lines = ["# DiffRes vs fixed resolution on our data", "",
             "Generated by `python -m model.compare` (see its docstring); every number below comes from the",
             "per-run JSON files in `runs/`. Accuracy: mean ± std over seeds on the validation split",
             "(keywords: stratified 15%; digits: one speaker held out). Frames: mean frames the backbone",
             "sees per clip. Throughput: onnxruntime, 3 s clips, batch 8, 2 threads, clips/s (median).", ""]
    for ds in datasets:
        rows: dict[str, dict] = {}
        for v in VARIANTS:
            runs = [json.loads(p.read_text()) for p in sorted(run_dir(out, ds, v.name).glob("seed*.json"))]
            if not runs:
                continue
            acc = [r["val_accuracy"] for r in runs]
            rows[v.name] = {
                "seeds": [r["seed"] for r in runs], "accuracy": acc,
                "accuracy_mean": statistics.mean(acc), "accuracy_std": statistics.pstdev(acc),
                "frames_in": statistics.mean(r["mean_frames_in"] for r in runs),
                "frames_out": statistics.mean(r["mean_frames_out"] for r in runs),
                "activeness": statistics.mean(r["activeness"] for r in runs),
                "throughput_clips_s": throughput.get(f"{ds}/{v.name}"),
                "epochs": runs[0]["epochs"], "splits": {r["seed"]: r["split"] for r in runs},
            }
        if not rows:
            continue
        summary["datasets"][ds] = rows
        splits = {seed: split for r in rows.values() for seed, split in r["splits"].items()}
        split_text = "; ".join(f"seed {seed}: {splits[seed]}" for seed in sorted(splits))
        lines += [f"## {ds} ({next(iter(rows.values()))['epochs']} epochs; {split_text})", "",
                  "| variant | seeds | accuracy | frames in → backbone | clips/s | activeness |", "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            tp = f"{r['throughput_clips_s']:.0f}" if r["throughput_clips_s"] else "–"
            lines.append(f"| {name} | {len(r['seeds'])} | {100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} "
                         f"| {r['frames_in']:.0f} → {r['frames_out']:.0f} | {tp} | {r['activeness']:.3f} |")
        lines += ["", "Verdicts, paired by seed (each seed is one split, shared by every variant): mean accuracy",
                  "difference ± its std over seeds; within the std, or under 0.5 points, is a tie.", ""]
        for a, b, why in PAIRS:
            if a in rows and b in rows and set(rows[a]["seeds"]) & set(rows[b]["seeds"]):
                result, mean, std, ahead, n = paired(dict(zip(rows[a]["seeds"], rows[a]["accuracy"])),
                                                     dict(zip(rows[b]["seeds"], rows[b]["accuracy"])))
                summary.setdefault("verdicts", []).append(
                    {"dataset": ds, "variant": a, "reference": b, "verdict": result, "mean_difference": mean,
                     "std_difference": std, "seeds_ahead": ahead, "seeds_compared": n})
                lines.append(f"- {a} **{result}** {why} ({b}): {100 * mean:+.2f} ± {100 * std:.2f} points, "
                             f"ahead on {ahead} of {n} seeds" + (" (provisional: under 3 seeds)" if n < 3 else ""))
        ours = [v["verdict"] for v in summary.get("verdicts", []) if v["dataset"] == ds
                and VARIANT_BY_NAME[v["variant"]].resolution == "diffres"
                and VARIANT_BY_NAME[v["reference"]].resolution != "diffres"]
        if ours:
            lines += ["", f"In short, DiffRes (every delta and hop above) wins {ours.count('wins')}, "
                          f"ties {ours.count('ties')} and loses {ours.count('loses')} of its {len(ours)} comparisons with a fixed resolution on {ds}."]
        lines.append("")
    missing = [f"{ds}/{v.name}" for ds in datasets for v in VARIANTS if v.name not in summary["datasets"].get(ds, {})]
    if missing:
        lines += [f"Not run yet ({len(missing)}): " + ", ".join(missing), ""]
    lines += ["![DiffRes on real clips](diffres_clips.png)", ""]
    (out / "RESULTS.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def figure(checkpoint: Path, out_png: Path, n_clips: int = 3) -> None:
    """Like the paper's visualisation: log-mel, importance curve, DiffRes output for real clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from export.onnx_export import load_checkpoint
    from .data import load_audio

    model, ckpt = load_checkpoint(checkpoint)
    paths = ckpt["val_clips"][:: max(1, len(ckpt["val_clips"]) // n_clips)][:n_clips]
    fig, axes = plt.subplots(3, n_clips, figsize=(5 * n_clips, 8), squeeze=False)
    for col, path in enumerate(paths):
        wave = torch.from_numpy(load_audio(path, model.cfg.frontend.sample_rate))[None]
        with torch.no_grad():
            x_log = model.compress(model.mel(wave))
            r = model.resolution(x_log)
        axes[0, col].imshow(x_log[0].T, origin="lower", aspect="auto")
        axes[0, col].set_title(f"{Path(path).parent.name}/{Path(path).name}: log-mel, {x_log.shape[1]} frames")
        axes[1, col].plot(r.score[0].numpy())
        axes[1, col].set_xlim(0, x_log.shape[1] - 1)
        axes[1, col].set_ylim(0, 1.05)
        axes[1, col].set_title("importance (sums to output frames)")
        axes[2, col].imshow(r.features[0, 0].T, origin="lower", aspect="auto")
        axes[2, col].set_title(f"DiffRes output (avg channel), {r.features.shape[2]} frames")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", type=Path, default=[Path("../shared/data/keywords"), Path("../shared/data/digits")])
    p.add_argument("--out", type=Path, default=Path("reports/compare"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in VARIANTS])
    p.add_argument("--epochs", type=int, default=None, help="override the per-dataset budget")
    p.add_argument("--checkpoints", type=Path, default=Path("runs/compare"), help="where run checkpoints go")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per run (0: torch default); 1 lets two workers share 2 cores")
    p.add_argument("--report-only", action="store_true", help="summarise finished runs, train nothing")
    p.add_argument("--figure-checkpoint", type=Path, default=None,
                   help="checkpoint for the figure; default: this comparison's diffres-0.5 seed 0 on the first dataset")
    p.add_argument("--figure-out", type=Path, default=None, help="default: OUT/diffres_clips.png")
    a = p.parse_args(argv)

    variants = [v for v in VARIANTS if v.name in a.variants]
    a.out.mkdir(parents=True, exist_ok=True)
    todo = [(d, v, s) for d in a.data for s in a.seeds for v in variants
            if not (run_dir(a.out, d.name, v.name) / f"seed{s}.json").exists()]
    if not a.report_only:
        for d, v, s in tqdm(todo, desc="compare runs", unit="run"):
            result_path = run_dir(a.out, d.name, v.name) / f"seed{s}.json"
            if result_path.exists():
                continue  # another worker finished it meanwhile
            epochs = a.epochs or EPOCHS.get(d.name, DEFAULT_EPOCHS)
            run_one(d, v, s, epochs, result_path, a.checkpoints, a.threads)
    tp_path = a.out / "throughput.json"
    throughput = json.loads(tp_path.read_text()) if tp_path.exists() else {}
    if not a.report_only:
        for d in a.data:
            clips, labels = scan_audio_folder(d)
            sr = native_sample_rate(clips)
            for v in tqdm(variants, desc=f"throughput {d.name}", unit="variant"):
                key = f"{d.name}/{v.name}"
                if key not in throughput and run_dir(a.out, d.name, v.name).exists():
                    throughput[key] = ort_throughput(v, sr, len(labels))
                    tp_path.write_text(json.dumps(throughput, indent=2))
    summarize(a.out, [d.name for d in a.data], throughput)
    ckpt = a.figure_checkpoint or a.checkpoints / a.data[0].name / "diffres-0.5" / "seed0" / "best.pt"
    if ckpt.exists():
        figure(ckpt, a.figure_out or a.out / "diffres_clips.png")
    print((a.out / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
