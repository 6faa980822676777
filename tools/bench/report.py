"""Goals check, the loadtest summary, and BENCHMARKS.md rendered from the JSON report (so the
table can never disagree with reports/bench.json)."""

from __future__ import annotations

import json
from pathlib import Path

from diffres.train.config import ModelConfig

SPEEDUP_GOALS = {0.5: 1.65, 0.75: 2.6}  # DiffRes over full resolution, same backbone, 3 s clips
AVGPOOL_COST_GOAL = 1.10  # DiffRes time over AvgPool's at the same delta
FRONTEND_SHARE_GOAL = 0.15
SCALING_GOAL = 1.2  # time per audio-second, 10 min over 10 s
PEAK_RSS_GOAL_MB = 600.0
_SHIPPED = ModelConfig()
# The goals are the shipped estimator's: the comparison's variant with its size (tools/compare/variants.py).
GOAL_VARIANT = f"diffres-{{delta:g}}-est{_SHIPPED.estimator_channels}x{_SHIPPED.estimator_blocks}"


def goals(report: dict) -> list[dict]:
    """Every goal with its measured value (a paired median where it is a ratio) and whether it is met."""
    out: list[dict] = []
    threads = report.get("settings", {}).get("threads")
    out += speed_goals(report.get("throughput", {}), f"{threads}-thread calls")
    layout_threads = report.get("settings", {}).get("layout_threads")
    out += speed_goals(report.get("service_layout", {}), f"service layout: {layout_threads}-thread calls")
    for batch, rows in report.get("throughput", {}).items():
        if "full" in rows and "frontend_share" in rows["full"]:
            v = rows["full"]["frontend_share"]["median"]
            out.append({"goal": f"frontend share of the full-resolution model, batch {batch}",
                        "target": f"<= {FRONTEND_SHARE_GOAL:.0%}", "value": v, "display": f"{v:.1%}",
                        "met": v <= FRONTEND_SHARE_GOAL})
    long = report.get("long_inputs", {})
    for row in long.get("single_call", []):
        if (row["seconds"] == 600 and "time_per_audio_s_vs_ref" in row and row.get("ref_seconds") == 10
                and row.get("ort_memory", "default") == "default"):
            v = row["time_per_audio_s_vs_ref"]["median"]
            out.append({"goal": "time per audio-second, 10 min over 10 s (one call each)", "target": f"<= {SCALING_GOAL:g}",
                        "value": v, "display": f"{v:.2f}", "met": v <= SCALING_GOAL})
    for row in long.get("single_call", []) + ([long["windowed"]] if long.get("windowed") else []):
        if row["seconds"] >= 600:
            how = method(row)
            v = row["peak_rss_mb"]
            out.append({"goal": f"peak RSS, {fmt_length(row['seconds'])} ({how})", "target": f"< {PEAK_RSS_GOAL_MB:g} MB",
                        "value": v, "display": f"{v:.0f} MB", "met": v < PEAK_RSS_GOAL_MB})
    return out


def speed_goals(throughput: dict, layout: str) -> list[dict]:
    """Issue 14's speed goals (the shipped DiffRes over full, and over AvgPool) for one timing section."""
    out: list[dict] = []
    for batch, rows in throughput.items():
        for delta, target in SPEEDUP_GOALS.items():
            row = rows.get(GOAL_VARIANT.format(delta=delta))
            if row:
                v = row["speedup_vs_full"]["median"]
                out.append({"goal": f"DiffRes (shipped estimator) speed-up vs full, delta {delta:g}, "
                                    f"batch {batch} ({layout})",
                            "target": f">= {target:g}x", "value": v, "display": f"{v:.2f}x", "met": v >= target})
            if row and "time_vs_avgpool" in row:
                v = row["time_vs_avgpool"]["median"]
                out.append({"goal": f"DiffRes (shipped estimator) time over AvgPool's, delta {delta:g}, "
                                    f"batch {batch} ({layout})",
                            "target": f"<= {AVGPOOL_COST_GOAL:.2f}", "value": v, "display": f"{v:.2f}",
                            "met": v <= AVGPOOL_COST_GOAL})
    return out


def loadtest_summary(path: Path) -> dict:
    """The load test's headline figures (reports/loadtest.json, written by `make loadtest`)."""
    if not path.exists():
        return {"present": False, "path": str(path), "note": "run `make loadtest`"}
    try:
        data = json.loads(path.read_text())
        return {"present": True, "path": str(path), "date": data["when"],
                "service_audio_s_per_s": data["service"]["total"]["audio_s_per_s"],
                "ceiling_audio_s_per_s": data["in_process"]["ceiling_audio_s_per_s"],
                "batch_1_audio_s_per_s": data["in_process"]["batch_1_audio_s_per_s"],
                "ratio": data["ratio"], "ratio_vs_batch_1": data["ratio_vs_batch_1"],
                "padding_share": data["padding_share"], "mean_batch_size": data["server_metrics"]["mean_batch_size"],
                "server_rss_mb": data["server_metrics"].get("server_rss_mb"),
                "goal": data["goal"], "goal_met": data["goal_met"]}
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        return {"present": False, "path": str(path), "note": f"unreadable ({exc!r}); run `make loadtest`"}


def method(row: dict) -> str:
    how = "windowed" if "windows" in row else "one call"
    memory = row.get("ort_memory", "default")
    return how if memory == "default" else f"{how}, {memory}"


def fmt_length(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def ms(s: dict) -> str:
    return f"{1e3 * s['median']:.1f} [{1e3 * s['p25']:.1f}-{1e3 * s['p75']:.1f}]"


def ratio(s: dict | None, fmt: str = "{:.2f}x") -> str:
    return "" if not s else fmt.format(s["median"]) + f" [{fmt.format(s['p25'])}-{fmt.format(s['p75'])}]"


def markdown(r: dict) -> str:
    env, st = r["environment"], r["settings"]
    L = [
        "# Benchmarks",
        "",
        f"_Generated by `{r['command']}` on {env['date']}; do not edit by hand. Regenerate with `make bench` "
        f"(or `python -m tools.bench`); the machine-readable report is `{st['json']}`._",
        "",
        f"Machine: {env['cpu_model']}, {env['cpus_usable']} usable cores, {env['mem_total_gib'] or 0:.0f} GiB; "
        f"onnxruntime {env['onnxruntime']}, torch {env['torch']}, Python {env['python']}, git {env['git']}. "
        f"Load average at start {env['load_average_at_start']}, at end {r.get('load_average_at_end')}"
        f"{' (quick run: few repeats, not for quoting)' if st['quick'] else ''}.",
        "",
        f"Models: fresh random-init exports (through `export.onnx_export.export_onnx`) with the keywords model's "
        f"configuration ({st['model_config']}); every resolution has the same backbone, so ratios compare like with "
        f"like. onnxruntime CPU, intra_op_num_threads={st['threads']}, inter_op_num_threads=1. Timings are medians "
        f"[p25-p75] of {st['repeats']} samples per model (each about {st['sample_seconds']:g} s of back-to-back calls, "
        f"after warm-up), all compared models interleaved in one loop; ratios are medians of per-round ratios.",
        "",
    ]
    load = env.get("load_average_at_start") or [0.0]
    if load[0] > 0.5 * (env.get("cpus_usable") or 1):
        L += [f"**The machine was busy** (1-minute load average {load[0]:g} on {env['cpus_usable']} cores before "
              "the run started): absolute times are inflated and spread out; the paired ratios are the figures to "
              "read, and even they are only indicative. Re-run `make bench` on a quiet machine for numbers to quote.",
              ""]
    L += [
        "## Goals",
        "",
        "| Goal | Target | Measured | Met |",
        "|---|---|---|---|",
    ]
    L += [f"| {g['goal']} | {g['target']} | {g['display']} | {'yes' if g['met'] else '**no**'} |" for g in r["goals"]]

    L += ["", f"## 1. Throughput: {st['clip_seconds']:g} s clips, onnxruntime", "",
          "| Model | Batch | ms per call | audio-s per s | clips per s | speed-up vs full | frontend share of its time |",
          "|---|---|---|---|---|---|---|"]
    for batch, rows in r["throughput"].items():
        for name, row in rows.items():
            L.append(f"| {name} | {batch} | {ms(row['time_per_call_s'])} | {row['audio_s_per_s']['median']:.0f} | "
                     f"{row['clips_per_s']['median']:.1f} | {ratio(row.get('speedup_vs_full'))} | "
                     f"{ratio(row.get('frontend_share'), '{:.1%}')} |")
    for name, why in (r.get("export_failures") or {}).items():
        L += ["", f"**{name} is missing**: its export failed ({why})."]
    L += ["", "`frontend` is the log-mel frontend alone (waveform -> log-mel, its own ONNX graph); its share of "
          "`full` is goal 2. The other rows are the comparison's variants (`tools/compare/variants.py`), same backbone."]

    if r.get("estimator_sizes"):
        L += estimator_section(r["estimator_sizes"])
    if r.get("service_layout"):
        L += layout_section(r["service_layout"], st.get("layout_threads"))

    e = r.get("eager_vs_ort")
    if e:
        L += ["", f"## 2. PyTorch eager vs onnxruntime ({e['model']}, batch 1, {e['seconds']:g} s)", "",
              "| PyTorch eager ms (no_grad, "
              f"{e['torch_threads']} threads) | onnxruntime ms | onnxruntime speed-up |", "|---|---|---|",
              f"| {ms(e['torch_eager_s'])} | {ms(e['onnxruntime_s'])} | {ratio(e['ort_speedup'])} |", "",
              "PyTorch eager runs hundreds of small ops, each an OpenMP parallel region whose barrier waits for "
              "every thread: when other processes share the cores it slows down by an order of magnitude and its "
              "spread explodes (onnxruntime degrades far less), so this ratio is only meaningful on a quiet machine."]

    long = r.get("long_inputs")
    if long:
        L += ["", f"## 3. Cost per audio-second and peak memory ({st.get('long_model', 'DiffRes')}, delta "
              f"{st['long_delta']:g}, batch 1, each length in a fresh process)", "",
              "| Input | Method | ms per audio-second | vs 10 s (paired) | peak RSS MB | above baseline MB | input MB |",
              "|---|---|---|---|---|---|---|"]
        for row in long["single_call"]:
            L.append(f"| {fmt_length(row['seconds'])} | {method(row)} | {1e3 * row['time_per_audio_s']['median']:.2f} | "
                     f"{ratio(row.get('time_per_audio_s_vs_ref'), '{:.2f}')} | {row['peak_rss_mb']:.0f} | "
                     f"{row['peak_above_baseline_mb']:.0f} | {row['input_mb']:.1f} |")
        w = long.get("windowed")
        if w:
            L.append(f"| {fmt_length(w['seconds'])} | {method(w)} (see below) | {1e3 * w['time_per_audio_s']:.2f} "
                     f"(wall {1e3 * w['time_per_audio_s_wall']:.2f}) |  | {w['peak_rss_mb']:.0f} | "
                     f"{w['peak_above_baseline_mb']:.0f} | streamed |")
            L += ["", f"{fmt_length(w['seconds'])}: {w['method']}; {w['windows']} windows. Its ms per audio-second "
                  "is the median model time per window (full batches) times the number of windows, over the audio "
                  "length; in brackets the wall-clock pass, cutting and stacking windows included; "
                  f"with overlap {w['overlap']:g} every audio-second is computed about {1 / (1 - w['overlap']):.1f} times. "
                  f"Window length and overlap from {st.get('window_seconds_from', '?')}; batch from "
                  f"{st.get('window_batch_from', '?')}."]
        L += ["", "Peak RSS is `ru_maxrss` of the probe process (numpy + onnxruntime, no torch); the baseline is "
              f"its RSS after creating the session ({long['single_call'][0]['baseline_max_rss_mb']:.0f} MB). "
              "The single-call lengths are timed interleaved with a 10 s input in the same process, so the "
              "'vs 10 s' ratio is paired. `no-mem-pattern` / `no-arena`: the same call with onnxruntime's "
              "`enable_mem_pattern` / `enable_cpu_mem_arena` off (the default has both on)."]

    prof = r.get("profile") or []
    if prof:
        L += profile_section(prof, r.get("throughput", {}), st.get("profile_runs", "?"))

    if r.get("resolution_alone"):
        L += resolution_section(r["resolution_alone"])

    lt = r.get("loadtest", {})
    L += ["", "## 5. Service vs in-process (`make loadtest`)", ""]
    if lt.get("present"):
        L += [f"From `{lt['path']}` ({lt['date']}): 16 locust users posting real clips of mixed length (1-5 s, "
              "10 % windowed 10-30 s recordings) against the same model in-process, timed by `diffres.clock` in "
              "slices between the load rounds. See reports/LOADTEST.md.", "",
              "| | audio s/s |", "|---|---|",
              f"| service | {lt['service_audio_s_per_s']} |",
              f"| in-process, batch 16 of 3 s (ceiling) | {lt['ceiling_audio_s_per_s']} |",
              f"| in-process, batch 1 of 3 s | {lt['batch_1_audio_s_per_s']} |", "",
              f"Service / ceiling: **{lt['ratio']}** (goal >= {lt['goal']}: {'met' if lt['goal_met'] else 'not met'}); "
              f"service / batch 1: {lt['ratio_vs_batch_1']}; padding {100 * (lt['padding_share'] or 0):.1f} % of the "
              f"samples sent to onnxruntime, mean batch {lt['mean_batch_size']}; server RSS (MB) at start and after "
              f"each round: {lt['server_rss_mb']}."]
    else:
        L.append(f"No `{lt.get('path', 'reports/loadtest.json')}` yet: {lt.get('note', 'run `make loadtest`')}.")
    L += ["", f"_Total benchmark time: {r['duration_s']:.0f} s._", ""]
    return "\n".join(L)


def profile_section(prof: list[dict], throughput: dict, runs: object) -> list[str]:
    """Section 4: per part, milliseconds per call and share of kernel time, one table per batch size."""
    L = ["", "## 4. Where the time goes (onnxruntime profiler, per part)", "",
         f"Kernel time per part over {runs} profiled calls (after warm-up). Each cell: the part's share of "
         "the kernel time applied to the unprofiled time per call of section 1 (so the ms of a column add up "
         "to that time less the executor's own overhead, the last row), then the share itself. On a busy "
         "machine preemptions land on whichever op is running, so small shares are noise.", ""]
    stages = sorted({s for p in prof for s in p["by_stage"]}, key=lambda s: -max(p["by_stage"].get(s, 0) for p in prof))
    for batch in sorted({p["batch"] for p in prof}):
        cols = [p for p in prof if p["batch"] == batch]
        call_ms = [throughput.get(str(batch), {}).get(p["model"], {}).get("time_per_call_s", {}).get("median", 0) * 1000
                   for p in cols]
        L += [f"Batch {batch}:", "", "| Part | " + " | ".join(p["model"] for p in cols) + " |", "|---|" + "---|" * len(cols)]
        for s in stages:
            cells = [f"{share * p['kernel_share_of_run'] * t:.2f} ms ({share:.0%})" if (share := p["by_stage"].get(s, 0)) else "-"
                     for p, t in zip(cols, call_ms)]
            L.append(f"| {s} | " + " | ".join(cells) + " |")
        L.append("| executor overhead (outside kernels) | " + " | ".join(
            f"{(1 - p['kernel_share_of_run']) * t:.2f} ms" for p, t in zip(cols, call_ms)) + " |")
        L.append("| **time per call (section 1)** | " + " | ".join(f"**{t:.2f} ms**" for t in call_ms) + " |")
        L.append("")
    for p in prof:
        top = list(p["by_op_type"].items())[:6]
        L.append(f"Top op types, {p['model']} batch {p['batch']}: " + ", ".join(f"{k} {v:.1%}" for k, v in top) + ".")
        L.append("")
    L += ["Parts come from the exporter's module scopes: `mel` + `compress` is the frontend, "
          "`resolution.estimator` DiffRes's importance CNN, `resolution.warp` the resolution module's own code "
          "(DiffRes: score normalisation, frame warping into average, max and position-code channels; AvgPool: "
          "the same warp with uniform scores, average channel only), `backbone.*` the CNN's stages and head, "
          "`backbone.pooling` its own code (padding masks between stages, masked mean/max pooling)."]
    return L


def resolution_section(alone: dict) -> list[str]:
    """Section 4b: the resolution modules alone, unprofiled (what section 4's parts cost without the profiler)."""
    L = ["", f"## 4b. The resolution modules alone ({alone['threads']}-thread calls, unprofiled)", "",
         f"Each profiled model's resolution module exported alone (log-mel [batch, {alone['frames']}, mels] and "
         "frames in, features out) and timed in one interleaved loop: its own code's cost per call without "
         "the profiler, whose fixed cost per node overstates small ops (section 4).", "",
         "| Resolution module | Batch | ms per call | time over AvgPool's, same delta |", "|---|---|---|---|"]
    for batch, name, row in _model_rows(alone["by_batch"]):
        L.append(f"| {name} | {batch} | {1e3 * row['time_per_call_s']['median']:.3f} | "
                 f"{ratio(row.get('time_vs_avgpool'), '{:.2f}')} |")
    return L


def layout_section(timed: dict, threads: int | None) -> list[str]:
    """Section 1c: the goals' models (and DiffRes with a cheaper estimator) timed as the service runs them."""
    L = ["", f"## 1c. In the service's call layout ({threads}-thread calls)", "",
         "The service runs one single-threaded onnxruntime call per core at once (`server.loaded.call_layout`), "
         "so this is the cost per call that served traffic pays; section 1 splits each call over "
         "several threads, which speeds up the backbone's large convolutions more than DiffRes's small ops. "
         "Same graphs, their own interleaved loop.", "",
         "| Model | Batch | ms per call | audio-s per s | speed-up vs full | time over AvgPool, same delta |",
         "|---|---|---|---|---|---|"]
    for batch, name, row in _model_rows(timed):
        L.append(f"| {name} | {batch} | {ms(row['time_per_call_s'])} | {row['audio_s_per_s']['median']:.0f} | "
                 f"{ratio(row.get('speedup_vs_full'))} | {ratio(row.get('time_vs_avgpool'), '{:.2f}')} |")
    return L


def _model_rows(timed: dict) -> list[tuple[str, str, dict]]:
    """(batch, model, row) of a timing section, the frontend-alone graph left out."""
    return [(batch, name, row) for batch, rows in timed.items() for name, row in rows.items() if name != "frontend"]


def estimator_section(sizes: dict) -> list[str]:
    """Section 1b: DiffRes 0.5 with smaller importance CNNs, timed in one loop with full and AvgPool."""
    L = ["", "## 1b. What a cheaper importance estimator would buy (DiffRes 0.5, timing only)", "",
         "Random-init graphs, same backbone, interleaved in their own loop. `diffres-0.5-estCxB`: the importance "
         "CNN with C channels and B dilated blocks instead of 64 x 3; `est1x0` (one channel, no block) is a bound, "
         "close to no estimator at all. Accuracy of these sizes is not measured here.", "",
         "| Model | Batch | ms per call | speed-up vs full | time over avgpool-0.5 |", "|---|---|---|---|---|"]
    for batch, name, row in _model_rows(sizes):
        L.append(f"| {name} | {batch} | {ms(row['time_per_call_s'])} | {ratio(row.get('speedup_vs_full'))} | "
                 f"{ratio(row.get('time_vs_avgpool'), '{:.2f}')} |")
    return L
