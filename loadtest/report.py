"""reports/loadtest.json (everything) and reports/LOADTEST.md (the numbers a reader wants)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any


def _combine(slices: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Baseline slices as one measurement: rates over their summed time."""
    seconds = sum(s["seconds"] for s in slices)
    audio = sum(s["audio_seconds"] for s in slices)
    clips = sum(s["clips"] for s in slices)
    cpu = sum(s["cpu_seconds"] for s in slices)
    return {"clips": clips, "seconds": round(seconds, 2), "audio_seconds": round(audio, 1),
            "clips_per_s": round(clips / seconds, 2), "audio_s_per_s": round(audio / seconds, 2),
            "cpu_seconds": round(cpu, 2), "audio_s_per_cpu_s": round(audio / cpu, 2) if cpu else None}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def write_reports(args: argparse.Namespace, service: dict[str, Any], slices: list[dict[str, Any]],
                  metrics: dict[str, Any], started: float, machine: dict[str, Any]) -> dict[str, Any]:
    inproc = {**_combine(slices), "slices": slices}
    rounds = []
    for i, svc in enumerate(service["rounds"]):
        around = _combine(slices[i:i + 2])["audio_s_per_s"]  # the baseline slices before and after it
        rounds.append({"service_audio_s_per_s": svc["audio_s_per_s"], "in_process_audio_s_per_s": around,
                       "ratio": _ratio(svc["audio_s_per_s"], around)})
    ratio = _ratio(service["total"]["audio_s_per_s"], inproc["audio_s_per_s"]) or 0.0
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {"users": args.users, "spawn_rate": args.spawn_rate, "run_time_s": args.run_time,
                   "rounds": args.rounds, "model": args.model, "long_fraction": args.long_fraction,
                   "raw_body": args.raw, "inproc_seconds": args.inproc_seconds, "seed": args.seed},
        "machine": machine,
        "service": service,
        "server_metrics": metrics,
        "in_process": inproc,
        "rounds": rounds,
        "ratio": ratio,
        "cpu_efficiency_ratio": _ratio(metrics.get("audio_s_per_cpu_s"), inproc["audio_s_per_cpu_s"]),
        "goal": args.goal,
        "goal_met": ratio >= args.goal,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loadtest.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "LOADTEST.md").write_text(markdown(result))
    return result


def _row(name: str, b: dict[str, Any]) -> str:
    lat = b["latency_ms"]
    return (f"| {name} | {b['requests']} | {b['failures']} | {b['requests_per_s']} | {b['audio_s_per_s']} | "
            f"{lat['p50']} | {lat['p95']} | {lat['p99']} |")


def markdown(r: dict[str, Any]) -> str:
    c, m, s, ip, sm = r["config"], r["machine"], r["service"], r["in_process"], r["server_metrics"]
    load = ", ".join(f"{x:.2f}" for x in m["load_avg_before"])
    lines = [
        "# Load test",
        "",
        f"{r['when']}: `python -m loadtest` (`make loadtest`): {c['users']} locust users (closed loop, no think "
        f"time), {c['run_time_s']} s of load in {c['rounds']} rounds, against `python -m app` on 127.0.0.1; "
        f"model `{c['model']}` (version {m['model_version']}, {m['model_sample_rate']} Hz); {m['cpus']} CPUs "
        f"(load average before: {load}). Clips: {s['clip_source']}; {round(c['long_fraction'] * 100)} % are "
        "10-30 s concatenations (windowed by the service), the rest single 1-5 s clips, posted as "
        f"{'raw bodies' if c['raw_body'] else 'multipart uploads'}. Each round's ramp-up is left out; latency "
        "is per request, client side.",
        "",
        "| traffic | requests | failures | requests/s | audio s/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
        _row("all", s["total"]),
        *[_row(k, s[k]) for k in ("short", "long") if k in s],
        "",
        f"Server: {sm['batches']} onnxruntime calls, mean batch {sm['mean_batch_size']}, "
        f"{sm['rejected_503']} rejected with 503; it used {sm['server_cpu_s']} CPU s, the locust client "
        f"{sm['client_cpu_s']} CPU s (on the same CPUs).",
        "",
        "## Service vs in-process onnxruntime",
        "",
        "In-process: the same clips and mix through the service's own session options, decoder and window "
        "plan (`loadtest/inprocess.py`), one clip after another: no HTTP, no micro-batcher, no concurrency. "
        "Baseline slices alternate with the load rounds, so both see the same background load.",
        "",
        "| | audio s/s | clips/s | audio s per CPU s |",
        "|---|---|---|---|",
        f"| service ({c['users']} users) | {s['total']['audio_s_per_s']} | {s['total']['requests_per_s']} | "
        f"{sm.get('audio_s_per_cpu_s')} |",
        f"| in-process | {ip['audio_s_per_s']} | {ip['clips_per_s']} | {ip['audio_s_per_cpu_s']} |",
        "",
        f"**Ratio service / in-process (audio s/s): {r['ratio']}** (goal >= {r['goal']}: "
        f"{'met' if r['goal_met'] else 'NOT met'}); per CPU second of the server process: "
        f"{r['cpu_efficiency_ratio']}.",
        "",
        "| round | service audio s/s | in-process audio s/s (slices around it) | ratio |",
        "|---|---|---|---|",
        *[f"| {i + 1} | {x['service_audio_s_per_s']} | {x['in_process_audio_s_per_s']} | {x['ratio']} |"
          for i, x in enumerate(r["rounds"])],
        "",
        "In-process slices (audio s/s): " + ", ".join(str(x["audio_s_per_s"]) for x in ip["slices"]) +
        ". Differences between them are other work on the machine.",
        "",
    ]
    return "\n".join(lines)
