"""python -m tools.bench [--quick] [--repeats N]: writes reports/bench.json and BENCHMARKS.md.

1. onnxruntime throughput on 3 s clips, batch 1 and 8: every variant of the comparison
   (tools/compare/variants.py: full resolution, DiffRes, pooling and hop baselines, same backbone) in
   one interleaved loop, the frontend alone too for its share of the full model's time. The
   comparison's speed table (docs, reports/compare/RESULTS.md) quotes this section.
2. PyTorch eager vs onnxruntime, batch 1 (DiffRes).
3. Cost per audio-second and peak RSS from 1 s to 10 min (one call each, fresh process per length),
   and 1 h run as the service does (overlapping clip-length windows, batched).
4. onnxruntime profile: kernel time by stage and op type; the resolution modules alone, unprofiled.
5. The service-vs-in-process ratio from reports/loadtest.json, when `make loadtest` has run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from diffres.models import MODELS_DIR
from tools.bench.report import GOAL_VARIANT
from tools.compare.variants import VARIANT_BY_NAME, VARIANTS

ROOT = Path(__file__).resolve().parents[2]
# The shipped DiffRes (its estimator size) at delta 0.5: eager vs onnxruntime, long inputs, always timed.
SHIPPED = GOAL_VARIANT.format(delta=0.5)
# Profiled per part: full resolution, and the shipped DiffRes next to pooling to the same frames at both deltas.
PROFILED = ("full", SHIPPED, "avgpool-0.5", GOAL_VARIANT.format(delta=0.75), "avgpool-0.75")
# Section 1c, in the service's call layout: the goals' models, and DiffRes with the older 64 x 3 estimator.
LAYOUT_TIMED = (*PROFILED, "diffres-0.5", "diffres-0.75")
# Importance CNN sizes against the comparison's 64 x 3 diffres-0.5 (timing only); 1x0 is a bound: next to no estimator.
ESTIMATOR_SIZES = ("32x3", "16x2", "1x0")


def keywords_windows(default: float = 3.0) -> tuple[float, float, str]:
    """The shipped keywords model's windows in the service (clip length, and its window overlap share from
    its window_hop_s; half a window when it has none), when it exists."""
    path = MODELS_DIR / "keywords.onnx"
    try:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        window_s = float(meta["clip_seconds"])
        hop_s = float(meta.get("window_hop_s") or 0) or window_s / 2
        return window_s, 1.0 - hop_s / window_s, f"{path.relative_to(ROOT)} metadata"
    except Exception:  # noqa: BLE001 - absent, unreadable or without the key: fall back to the default
        return default, 0.5, "default (models/keywords.onnx absent or without clip_seconds)"


def service_batch_size(default: int = 8) -> tuple[int, str]:
    """The service's default batch size (app.config.Settings.batch_size), when app is importable."""
    try:
        from diffres.server.config import Settings

        return int(Settings.model_fields["batch_size"].default), "diffres.server.config.Settings.batch_size default"
    except Exception:  # noqa: BLE001 - app absent or changed: keep the benchmark running
        return default, "default (app.config not importable)"


def error_summary(exc: BaseException) -> str:
    """One line: torch.onnx's own summary line ("<class ...>: why") when it gives one, else the first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return next((line for line in lines if line.startswith("<class ")), lines[0])[:300]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run (~1 min): full and {SHIPPED} only, 3 repeats, lengths up to 10 s, 60 s windowed")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per model (default 11, quick 3)")
    p.add_argument("--sample-seconds", type=float, default=None,
                   help="each sample averages calls lasting about this long (default 0.2, quick 0.05)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads and torch threads")
    p.add_argument("--layout-threads", type=int, default=1,
                   help="intra-op threads of section 1c, the service's call layout (default 1: one single-threaded "
                        "call per core, server.loaded.call_layout on CPU; 0 skips)")
    p.add_argument("--estimators", nargs="*", default=None, metavar="CxB",
                   help="DiffRes 0.5 importance-CNN sizes (channels x blocks) timed against the default one "
                        f"(default {' '.join(ESTIMATOR_SIZES)}; quick: none)")
    p.add_argument("--variants", nargs="+", default=None, choices=[v.name for v in VARIANTS],
                   help=f"comparison variants timed (default all; quick: full {SHIPPED}); full and {SHIPPED} always")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--clip-seconds", type=float, default=3.0, help="clip length for throughput")
    p.add_argument("--lengths", type=float, nargs="*", default=None,
                   help="single-call lengths in seconds (default 1 10 60 600; quick 1 10)")
    p.add_argument("--long-repeats", type=int, default=None, help="timed samples per long length (default 7, quick 2)")
    p.add_argument("--hour-seconds", type=float, default=None,
                   help="length run windowed as the service does (default 3600; quick 60; 0 skips)")
    p.add_argument("--window-seconds", type=float, default=None,
                   help="window length (default: clip_seconds of models/keywords.onnx, else 3.0)")
    p.add_argument("--overlap", type=float, default=None,
                   help="window overlap share (default: from models/keywords.onnx's window_hop_s, else 0.5)")
    p.add_argument("--window-batch", type=int, default=None,
                   help="windows per onnxruntime call (default: the service's batch_size, else 8)")
    p.add_argument("--memory-variants", nargs="*", default=None, choices=["no-mem-pattern", "no-arena"],
                   help="onnxruntime memory options also tried at the longest single-call length "
                        "(default both; quick no-mem-pattern)")
    p.add_argument("--profile-runs", type=int, default=None, help="profiled calls per model (default 20, quick 3)")
    p.add_argument("--json", default="reports/bench.json")
    p.add_argument("--markdown", default="BENCHMARKS.md")
    p.add_argument("--loadtest", default="reports/loadtest.json")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: re-render the markdown from the JSON report, refreshing the loadtest section")
    p.add_argument("--models-dir", default=None, help="keep the exported models here (default: a temp dir)")
    a = p.parse_args(argv)
    quick = a.quick
    a.repeats = a.repeats or (3 if quick else 11)
    a.sample_seconds = a.sample_seconds or (0.05 if quick else 0.2)
    chosen = a.variants or ([] if quick else [v.name for v in VARIANTS])
    a.variants = [v.name for v in VARIANTS if v.name in {"full", SHIPPED, *chosen}]
    sizes = a.estimators if a.estimators is not None else ([] if quick else list(ESTIMATOR_SIZES))
    try:
        a.estimators = [tuple(int(n) for n in size.split("x")) for size in sizes]
    except ValueError:
        p.error(f"--estimators takes CHANNELSxBLOCKS, e.g. 32x3 (got {sizes})")
    a.lengths = a.lengths if a.lengths is not None else ([1, 10] if quick else [1, 10, 60, 600])
    a.long_repeats = a.long_repeats or (2 if quick else 7)
    a.hour_seconds = a.hour_seconds if a.hour_seconds is not None else (60 if quick else 3600)
    a.profile_runs = a.profile_runs or (3 if quick else 20)
    if a.memory_variants is None:
        a.memory_variants = ["no-mem-pattern"] if quick else ["no-mem-pattern", "no-arena"]
    return a


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(a: argparse.Namespace, argv: list[str], models_dir: Path) -> dict:
    # torch is imported here, not at module level: `python -m tools.bench.longrun` must stay torch-free
    from diffres.contract import frames_in

    from . import longrun, report, sections
    from .env import environment, load_average
    from .models import (
        KEYWORDS_FRONTEND,
        export_classifier,
        export_frontend,
        export_resolution,
        model_config,
    )

    t_start = time.perf_counter()
    env = environment(ROOT)
    sr = KEYWORDS_FRONTEND.sample_rate
    window_s, model_overlap, window_source = keywords_windows()
    if a.window_seconds:
        window_s, window_source = a.window_seconds, "--window-seconds"
    if a.overlap is None:
        a.overlap = model_overlap
    else:
        window_source += "; overlap from --overlap"
    window_batch, batch_source = (a.window_batch, "--window-batch") if a.window_batch else service_batch_size()
    command = "python -m tools.bench" + ("" if not argv else " " + shlex.join(argv))
    r: dict = {"command": command, "environment": env}

    log(f"exporting models into {models_dir}")
    models, failed = [], {}
    for name in a.variants:
        try:
            models.append(export_classifier(VARIANT_BY_NAME[name], models_dir))
        except Exception as exc:  # noqa: BLE001 - one variant the exporter cannot trace must not stop the rest
            if name in ("full", SHIPPED):
                raise
            failed[name] = error_summary(exc)
            log(f"export of {name} failed, left out: {failed[name]}")
    r["export_failures"] = failed
    full = next(m for m in models if m.name == "full")
    diffres = next(m for m in models if m.name == SHIPPED)
    frontend = export_frontend(full.model, models_dir)
    r["models"] = {m.name: {"config": m.config, "onnx_bytes": m.path.stat().st_size} for m in models + [frontend]}
    cfg = model_config(VARIANT_BY_NAME[SHIPPED])
    r["settings"] = {
        "quick": a.quick, "repeats": a.repeats, "sample_seconds": a.sample_seconds, "threads": a.threads,
        "layout_threads": a.layout_threads,
        "inter_op_threads": 1, "batches": a.batches, "clip_seconds": a.clip_seconds, "variants": a.variants,
        "lengths": a.lengths, "long_repeats": a.long_repeats, "long_delta": 0.5, "long_model": SHIPPED,
        "hour_seconds": a.hour_seconds, "window_seconds": window_s, "window_seconds_from": window_source,
        "overlap": a.overlap, "window_batch": window_batch, "window_batch_from": batch_source,
        "memory_variants": a.memory_variants,
        "profile_runs": a.profile_runs,
        "json": a.json, "markdown": a.markdown,
        "model_config": f"{sr // 1000} kHz, {cfg.frontend.n_mels} mels, {cfg.frontend.hop_ms:g} ms hop, "
                        f"{cfg.frontend.win_ms:g} ms window, backbone width {cfg.backbone_width}, "
                        f"{cfg.n_classes} classes",
    }

    log(f"throughput: {len(models)} models + frontend, batches {a.batches}, {a.repeats} repeats")
    r["throughput"] = sections.throughput(models + [frontend], a.batches, a.clip_seconds, sr, a.threads,
                                          a.repeats, a.sample_seconds)
    log("PyTorch eager vs onnxruntime")
    r["eager_vs_ort"] = sections.eager_vs_ort(diffres, a.clip_seconds, sr, a.threads, a.repeats, a.sample_seconds)
    if a.estimators:
        log(f"estimator sizes: {a.estimators}")
        cheaper = [export_classifier(VARIANT_BY_NAME["diffres-0.5"], models_dir, estimator=e) for e in a.estimators]
        # the sizes' baseline is the comparison's 64 x 3 diffres-0.5 (exported here when not timed above)
        reference = ([m for m in models if m.name == "diffres-0.5"]
                     or [export_classifier(VARIANT_BY_NAME["diffres-0.5"], models_dir)])
        same_frames = [m for m in models if m.name in ("full", "avgpool-0.5")] + reference
        r["estimator_sizes"] = sections.throughput(same_frames + cheaper + [frontend], a.batches, a.clip_seconds,
                                                   sr, a.threads, a.repeats, a.sample_seconds)
    if a.layout_threads and a.layout_threads != a.threads:
        log(f"service call layout: {a.layout_threads} intra-op thread(s) per call")
        timed = [m for m in models if m.name in LAYOUT_TIMED]
        r["service_layout"] = sections.throughput(timed + [frontend], a.batches, a.clip_seconds, sr,
                                                  a.layout_threads, a.repeats, a.sample_seconds)
    log("profiling")
    by_name = {m.name: m for m in models}
    profiled = [by_name[n] for n in PROFILED if n in by_name]
    r["profile"] = [sections.profile(m, batch, a.clip_seconds, sr, a.threads, a.profile_runs, models_dir)
                    for batch in a.batches for m in profiled]
    alone_threads = a.layout_threads or a.threads
    log(f"resolution modules alone, {alone_threads}-thread calls")
    alone = [export_resolution(m, models_dir) for m in profiled if m.name != "full"]
    frames = frames_in(int(a.clip_seconds * sr), cfg.frontend.hop_length)
    r["resolution_alone"] = {"threads": alone_threads, "frames": frames, "by_batch": sections.resolution_alone(
        alone, a.batches, frames, cfg.frontend.n_mels, alone_threads, a.repeats, a.sample_seconds)}

    single = []
    for seconds in a.lengths:
        log(f"long input: {seconds:g} s, one call, fresh process")
        ref = 10.0 if seconds > 10 else None
        single.append(longrun.probe(str(diffres.path), seconds, sr, a.threads, repeats=a.long_repeats,
                                    ref_seconds=ref))
    for memory in a.memory_variants if a.lengths else []:
        seconds = max(a.lengths)
        log(f"long input: {seconds:g} s, one call, onnxruntime memory option {memory}")
        single.append(longrun.probe(str(diffres.path), seconds, sr, a.threads, repeats=a.long_repeats,
                                    ref_seconds=10.0 if seconds > 10 else None, memory=memory))
    r["long_inputs"] = {"single_call": single}
    if a.hour_seconds:
        log(f"long input: {a.hour_seconds:g} s windowed ({window_s:g} s windows, overlap {a.overlap:g}, "
            f"batch {window_batch})")
        r["long_inputs"]["windowed"] = longrun.probe(str(diffres.path), a.hour_seconds, sr, a.threads,
                                                     windowed_run=True, window_s=window_s, overlap=a.overlap,
                                                     batch=window_batch)

    r["loadtest"] = report.loadtest_summary(ROOT / a.loadtest) | {"path": a.loadtest}
    r["goals"] = report.goals(r)
    r["load_average_at_end"] = load_average()
    r["duration_s"] = time.perf_counter() - t_start
    return r


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    from . import report

    json_path, md_path = ROOT / a.json, ROOT / a.markdown
    if a.render:
        r = json.loads(json_path.read_text())
        r["loadtest"] = report.loadtest_summary(ROOT / a.loadtest) | {"path": a.loadtest}
        r["goals"] = report.goals(r)  # derived from the measurements, so a new goal rule re-renders too
        json_path.write_text(json.dumps(r, indent=2) + "\n")
        md_path.write_text(report.markdown(r))
        log(f"re-rendered {md_path} from {json_path} (measurements of {r['environment']['date']})")
        return 0
    if a.models_dir:
        models_dir = Path(a.models_dir)
        models_dir.mkdir(parents=True, exist_ok=True)
        r = run(a, argv, models_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            r = run(a, argv, Path(tmp))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(r, indent=2) + "\n")
    md_path.write_text(report.markdown(r))
    log(f"wrote {json_path} and {md_path} in {r['duration_s']:.0f} s")
    for g in r["goals"]:
        print(f"  {'MET ' if g['met'] else 'MISS'} {g['goal']}: {g['display']} (target {g['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
