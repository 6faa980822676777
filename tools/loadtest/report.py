"""reports/loadtest.json (everything) and reports/LOADTEST.md (the numbers a reader wants)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

CEILING = "batch_16"


def _median(slice_: dict[str, Any], key: str) -> float:
    return slice_["audio_s_per_s"][key]["median"]


def _combine(slices: Sequence[dict[str, Any]], key: str) -> float:
    """Reference slices as one figure: the mean of their medians (each slice is equally long)."""
    return round(sum(_median(s, key) for s in slices) / len(slices), 2)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


# Issue 23's goals (benchmarks, not tests): (figure, test, goal, what)
GOALS = (("outside_3s", "<=", 1.0, "CPU per request outside onnxruntime, 3 s clips (short traffic), ms"),
         ("efficiency_short", ">=", 0.85, "CPU efficiency (onnxruntime CPU / server CPU), short clips"),
         ("efficiency_mixed", ">=", 0.85, "CPU efficiency, mixed traffic"),
         ("ratio_short", ">=", 0.75, "service / in-process batch-16 ceiling, short clips"),
         ("ratio_mixed", ">=", 0.65, "service / in-process batch-16 ceiling, mixed traffic"))


def _rounds(service: dict[str, Any], slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each load round against the reference slices before and after it."""
    out = []
    for i, svc in enumerate(service["rounds"]):
        a, b = service.get("around", [(j, j + 1) for j in range(len(service["rounds"]))])[i]
        around = _combine([slices[a], slices[b]], CEILING)
        out.append({"service_audio_s_per_s": svc["audio_s_per_s"], "ceiling_audio_s_per_s": around,
                    "ratio": _ratio(svc["audio_s_per_s"], around)})
    return out


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 23's goals with this run's figures (None where the run did not measure one)."""
    traffic, work = result.get("traffic", {}), result["server_metrics"].get("by_traffic", {})
    figures = {"outside_3s": work.get("short", {}).get("outside_onnxruntime_ms_per_request"),
               "efficiency_short": work.get("short", {}).get("cpu_efficiency"),
               "efficiency_mixed": work.get("mixed", {}).get("cpu_efficiency"),
               "ratio_short": traffic.get("short", {}).get("ratio"),
               "ratio_mixed": traffic.get("mixed", {}).get("ratio")}
    out = []
    for key, test, goal, what in GOALS:
        figure = figures[key]
        met = None if figure is None else (figure <= goal if test == "<=" else figure >= goal)
        out.append({"goal": key, "what": what, "test": test, "target": goal, "figure": figure, "met": met})
    return out


def write_reports(args: argparse.Namespace, service: dict[str, Any], slices: list[dict[str, Any]],
                  metrics: dict[str, Any], started: float, machine: dict[str, Any],
                  traffic: dict[str, dict[str, Any]] | None = None,
                  profiles: dict[str, Any] | None = None) -> dict[str, Any]:
    ceiling, batch_1 = _combine(slices, CEILING), _combine(slices, "batch_1")
    inproc = {"ceiling_audio_s_per_s": ceiling, "batch_1_audio_s_per_s": batch_1, "slices": slices}
    rounds = _rounds(service, slices)
    svc_rate = service["total"]["audio_s_per_s"]
    ratio = _ratio(svc_rate, ceiling) or 0.0
    per_audio = metrics.get("model_run_per_audio_s")
    model_run_rate = round(svc_rate * per_audio, 2) if per_audio else None
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
        "ratio_vs_batch_1": _ratio(svc_rate, batch_1),
        # What onnxruntime ran in the service (overlapping windows and padding counted) vs the ceiling.
        "model_run_audio_s_per_s": model_run_rate,
        "model_run_ratio": _ratio(model_run_rate, ceiling),
        "padding_share": metrics.get("padding_share"),
        "goal": args.goal,
        "goal_met": ratio >= args.goal,
    }
    if traffic:
        result["traffic"] = {kind: {"service": t, "ratio": _ratio(t["total"]["audio_s_per_s"], ceiling),
                                    "rounds": _rounds(t, slices), "clip_3s": t.get("clip_3s"),
                                    "work": metrics.get("by_traffic", {}).get(kind)} for kind, t in traffic.items()}
        result["config"]["traffic"] = list(traffic)
    if profiles is not None:
        result["profiles"] = profiles
    if traffic:
        result["issue_23_goals"] = goals(result)
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
    first = (ip.get("slices") or [{}])[0]
    layout = (f"{first.get('concurrent_calls', 1)} call(s) at once of {first.get('intra_op_threads', '?')} "
              "intra-op thread(s)")
    lines = [
        "# Load test",
        "",
        f"{r['when']}: `python -m tools.loadtest` (`make loadtest`): {c['users']} locust users (closed loop, no think "
        f"time), {c['run_time_s']} s of load in {c['rounds']} rounds"
        f"{' per traffic (' + ', '.join(c['traffic']) + ')' if c.get('traffic') else ''}, against `diffres serve` on "
        "127.0.0.1; "
        f"model `{c['model']}` (version {m['model_version']}, {m['model_sample_rate']} Hz); {m['cpus']} CPUs "
        f"(load average before: {load}). Clips: {s['clip_source']}; {round(c['long_fraction'] * 100)} % are "
        "10-30 s concatenations (windowed by the service), the rest single 1-5 s clips, posted as "
        f"{'raw bodies' if c['raw_body'] else 'multipart uploads'}. Each round's ramp-up is left out; latency "
        "is per request, client side." + (" The first table is the mixed traffic; short clips alone are further "
                                          "down." if "short" in c.get("traffic", []) else ""),
        "",
        "| traffic | requests | failures | requests/s | audio s/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
        _row("all", s["total"]),
        *[_row(k, s[k]) for k in ("short", "long") if k in s],
        "",
        f"Server: {sm['batches']} onnxruntime calls, mean batch {sm['mean_batch_size']}, padding "
        f"{_pct(sm.get('padding_share'))} of the samples sent to onnxruntime, {sm['rejected_503']} rejected with "
        f"503; it used {sm['server_cpu_s']} CPU s, the locust client {sm['client_cpu_s']} CPU s (on the same CPUs). "
        f"Server RSS (MB) at start and after each round: {sm.get('server_rss_mb')}.",
        "",
        "## Service vs in-process onnxruntime",
        "",
        "In-process (`tools/loadtest/inprocess.py`): the same model file, session options, threads and concurrent calls "
        f"as the service ({layout}), timed by `diffres.clock` on 3 s clips at batch 16 in every call (the batched "
        "ceiling: full calls, no padding, no HTTP, no decoding) and at batch 1, interleaved. Reference slices "
        "alternate with the load rounds, so both see the same background load.",
        "",
        "| | audio s/s |",
        "|---|---|",
        f"| service ({c['users']} users, mixed lengths) | {s['total']['audio_s_per_s']} |",
        f"| in-process, batch 16 of 3 s (ceiling) | {ip['ceiling_audio_s_per_s']} |",
        f"| in-process, batch 1 of 3 s | {ip['batch_1_audio_s_per_s']} |",
        "",
        f"**Ratio service / batched ceiling: {r['ratio']}** (goal >= {r['goal']}: "
        f"{'met' if r['goal_met'] else 'NOT met'}); service / batch 1: {r['ratio_vs_batch_1']}.",
        "",
        "| round | service audio s/s | ceiling audio s/s (slices around it) | ratio |",
        "|---|---|---|---|",
        *[f"| {i + 1} | {x['service_audio_s_per_s']} | {x['ceiling_audio_s_per_s']} | {x['ratio']} |"
          for i, x in enumerate(r["rounds"])],
        "",
        "Reference slices (audio s/s, batch 16 / batch 1): " + ", ".join(
            f"{_median(x, CEILING):.0f} / {_median(x, 'batch_1'):.0f}" for x in ip["slices"]) +
        ". Differences between them are other work on the machine.",
        "",
        *_traffic(r),
        *_gap(r),
        *_profiles(r),
        *_goals(r),
    ]
    return "\n".join(lines)


TRAFFIC_NAMES = {"short": "short clips (1-5 s) only", "mixed": "mixed (with 10-30 s files)"}


def _traffic(r: dict[str, Any]) -> list[str]:
    """Short clips and mixed traffic side by side: throughput, latency, the ratio to the ceiling, and the work per
    request (server CPU, onnxruntime's share of it); empty for reports without them."""
    traffic = r.get("traffic")
    if not traffic:
        return []
    lines = ["## Short clips and mixed traffic", "",
             "| traffic | requests | failures | requests/s | audio s/s | p50 ms | p95 ms | p99 ms "
             "| ratio to the ceiling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, t in traffic.items():
        lines.append(_row(TRAFFIC_NAMES.get(kind, kind), t["service"]["total"]) + f" {t['ratio']} |")
    clip = (traffic.get("short") or {}).get("clip_3s") or {}
    if clip.get("requests"):
        lines += ["", f"Clips of {clip['seconds'][0]:g}-{clip['seconds'][1]:g} s in the short-clip rounds "
                      f"({clip['requests']} requests): latency p50/p95/p99 "
                      f"{clip['p50']}/{clip['p95']}/{clip['p99']} ms."]
    lines += ["", "### Work per request", "",
              "The server's CPU time (all its processes, /proc) over each traffic's rounds, ramp-up included, per "
              "request; onnxruntime's is the session calls' own thread CPU time "
              "(`diffres_inference_cpu_seconds_total`); the rest is HTTP, multipart, decoding, the answer, JSON, logs, metrics and thread hand-overs. CPU "
              "efficiency = onnxruntime CPU / server CPU.", "",
              "| traffic | requests | server CPU ms/request | onnxruntime ms/request | outside onnxruntime ms/request "
              "| CPU efficiency | audio s per server CPU s |", "|---|---|---|---|---|---|---|"]
    for kind, t in traffic.items():
        w = t.get("work") or {}
        lines.append(f"| {TRAFFIC_NAMES.get(kind, kind)} | {w.get('requests')} | {w.get('cpu_ms_per_request')} | "
                     f"{w.get('onnxruntime_ms_per_request')} | {w.get('outside_onnxruntime_ms_per_request')} | "
                     f"{w.get('cpu_efficiency')} | {w.get('audio_s_per_cpu_s')} |")
    return [*lines, ""]


def _profiles(r: dict[str, Any]) -> list[str]:
    from tools.loadtest.profile import markdown as profile_markdown

    profiles = r.get("profiles") or {}
    if not any(p.get("samples") for p in profiles.values()):
        return []
    lines = ["## Where the server's CPU goes: a sampling profile under load", "",
             "py-spy (`record --nonblocking`: the server is never paused) on the server process during extra "
             "locust phases of short clips, after the measured rounds. Python frames only: time inside "
             "onnxruntime, libsndfile or numpy shows as the Python frame that called them. First every thread "
             "that was running, then only the thread holding the GIL (the Python work that threads cannot share).",
             ""]
    titles = {"all_threads": "All running threads", "gil": "The thread holding the GIL"}
    for name, summary in profiles.items():
        lines += [f"### {titles.get(name, name)}", "", *profile_markdown(summary, "Samples"), ""]
    return lines


def _goals(r: dict[str, Any]) -> list[str]:
    rows = r.get("issue_23_goals")
    if not rows:
        return []
    verdict = {True: "met", False: "**not met**", None: "not measured"}
    lines = ["## Goals: work per request", "", "| goal | target | this run | |", "|---|---|---|---|"]
    lines += [f"| {g['what']} | {g['test']} {g['target']} | {g['figure']} | {verdict[g['met']]} |" for g in rows]
    return [*lines, ""]


def _gap(r: dict[str, Any]) -> list[str]:
    """Where the service's throughput goes, from its own counters (empty for reports without them)."""
    sm, ip = r["server_metrics"], r["in_process"]
    if not sm.get("model_run_per_audio_s"):
        return []
    first = (ip.get("slices") or [{}])[0]
    busy = first.get("concurrent_calls", 1) * first.get("intra_op_threads", 1)
    m = r.get("machine", {})
    plan = (f"a {m['model_window_s']} s window every {m['model_window_hop_s']} s, so each of their seconds runs "
            f"about {round(m['model_window_s'] / m['model_window_hop_s'], 1):g} times" if m.get("model_window_hop_s")
            else "so each of their seconds runs several times")
    return [
        "## Where the gap is",
        "",
        f"- Work done on purpose: onnxruntime ran on {sm['model_run_per_audio_s']} s of audio per uploaded "
        f"second ({sm['model_run_s']} s in all, {sm['model_padding_s']} s of it padding). Long files are cut "
        f"into windows that overlap (the model's event rule, `DIFFRES_WINDOW_HOP_S`: {plan}). "
        "Counted as onnxruntime sees it, the service ran "
        f"{r['model_run_audio_s_per_s']} audio s/s: **{r['model_run_ratio']} of the ceiling**.",
        f"- The rest is CPU spent outside onnxruntime: HTTP, multipart, decoding, the response, the event "
        f"loop and locust itself ({sm['client_cpu_s']} CPU s). The server classified {sm['audio_s_per_cpu_s']} "
        f"uploaded audio s per CPU s; the ceiling, with {busy} CPU(s) busy, "
        f"{round(ip['ceiling_audio_s_per_s'] / busy, 1)} per busy CPU.",
        "",
    ]


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


# ---------------------------------------------------------------- protocols (python -m tools.loadtest.protocols)

PROTOCOL_NAMES = {"grpc": "gRPC ModelInfer, raw tensors", "v2": "HTTP /v2 infer, binary tensors",
                  "v1": "HTTP /v1/classify, file body"}


def write_protocol_reports(args: argparse.Namespace, results: dict[str, Any], started: float,
                           machine: dict[str, Any]) -> dict[str, Any]:
    """protocols.json (everything but the raw records) and PROTOCOLS.md (the table) in args.out."""
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {"protocols": args.protocols, "concurrency": args.concurrency, "seconds": args.seconds,
                   "rounds": args.rounds, "clips": args.clips, "model": args.model, "seed": args.seed},
        "machine": machine,
        "protocols": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "protocols.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "PROTOCOLS.md").write_text(protocols_markdown(result))
    return result


def _protocol_row(name: str, r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (f"| {PROTOCOL_NAMES.get(name, name)} | {r['requests']} | {r['failures']} | {r['requests_per_s']} | "
            f"{r['audio_s_per_s']} | {r['server_cpu_ms_per_request']} | {r['server_cpu_s_per_audio_s']} | "
            f"{r['client_cpu_ms_per_request']} | {lat['p50']} | {lat['p95']} | {lat['p99']} |")


def protocols_markdown(r: dict[str, Any]) -> str:
    c, m = r["config"], r["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["load_avg_before"])
    return "\n".join([
        "# Protocols: gRPC, HTTP /v2 and /v1 on the same clips",
        "",
        f"{r['when']}: `python -m tools.loadtest.protocols`: {c['clips']} short clips of model `{c['model']}` "
        f"({m['model_sample_rate']} Hz) sent closed-loop, {c['concurrency']} in flight, to one `diffres serve` "
        f"with DIFFRES_GRPC_PORT; {c['rounds']} phases of {c['seconds']:g} s per protocol, in rotation. "
        f"{m['cpus']} CPUs shared by client and server (load average before: {load}). Tensor requests send one "
        "row per clip at the model's rate and ask for `logits` only; /v1 sends the file and the service decodes "
        "it. Server CPU is the server process's CPU time over each phase divided by its requests.",
        "",
        "| protocol | requests | failures | requests/s | audio s/s | server CPU ms/request | server CPU s/audio s "
        "| client CPU ms/request | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[_protocol_row(name, x) for name, x in r["protocols"].items()],
        "",
        "Throughput here is bounded by the CPUs the client takes from the server on the same machine; server "
        "CPU per request is the figure that carries to a machine of its own. Other work on the machine makes "
        "all of these noisy: compare protocols within one run, not across runs.",
        "",
    ])
