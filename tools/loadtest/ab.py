"""`python -m tools.loadtest.ab`: CPU per request of two or more service variants, A/B, interleaved.

Each variant is `diffres serve` with its own environment (`NAME:VAR=VALUE,VAR=VALUE`; e.g.
`base:PYTHONPATH=/tmp/base/src` runs another checkout's code, `workers:DIFFRES_WORKERS=2` another
layout, `LOADTEST_SERVER=MODULE` runs `python -m MODULE` instead, e.g. the front end alone:
tools/loadtest/floor.py). All variants start once, then take turns under the same locust load (the
load test's users and clip set, `--kind short`: the 1-5 s keyword clips only, `mixed`: with the load
test's share of 10-30 s files; `--wav`: the short clips as 16-bit WAV), round after round in
rotating order, so all see the same share of whatever else the machine does. Per phase: requests,
the server's CPU seconds (all its processes, /proc) and, when the variant exports it, onnxruntime's
own CPU seconds (diffres_inference_cpu_seconds_total). Reported per variant: CPU ms per request, of
which onnxruntime and outside it, the CPU efficiency (onnxruntime CPU / server CPU), throughput and
latency; and the ratio of every variant's figures to the first one's.
CPU per request hardly depends on what else runs on the machine; throughput does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from diffres.models import MODELS_DIR
from tools.loadtest import clips as cliplib
from tools.loadtest.__main__ import clip_3s, metric_sum, run_locust
from tools.loadtest.server import Server
from tools.loadtest.stats import summarize

ROOT = Path(__file__).resolve().parents[2]
ORT_CPU = "diffres_inference_cpu_seconds_total"


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, spec = text.partition(":")
    env = dict(item.split("=", 1) for item in spec.split(",") if item)
    return name, env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest.ab", description=__doc__.splitlines()[0])
    p.add_argument("--variant", action="append", required=True, help="NAME:VAR=VALUE,... (repeat; first = A)")
    p.add_argument("--kind", choices=("short", "mixed"), default="short")
    p.add_argument("-u", "--users", type=int, default=16)
    p.add_argument("-t", "--seconds", type=int, default=12, help="seconds of load per phase (default 12)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="keywords")
    p.add_argument("--wav", action="store_true", help="short clips re-encoded as 16-bit PCM WAV (decoding costs "
                                                      "next to nothing) instead of the data's FLAC files")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "tmp" / "ab",
                   help="where ab.json and AB.md go (default reports/tmp/ab)")
    p.add_argument("--work", type=Path, default=ROOT / "reports" / "tmp" / "ab-work",
                   help="clips, server and locust logs (default reports/tmp/ab-work)")
    p.add_argument("--title", default="A/B: CPU per request", help="the report's heading")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.variants = [parse_variant(v) for v in args.variant]
    return args


def ort_cpu(server: Server) -> float | None:
    """onnxruntime's CPU seconds so far, all worker processes together (None: the variant does not export them)."""
    texts = server.metrics_by_process()
    return sum(metric_sum(t, ORT_CPU) for t in texts) if all(ORT_CPU in t for t in texts) else None


def phase(args: argparse.Namespace, server: Server, clip_dir: Path, work: Path, long_fraction: float
          ) -> dict[str, Any]:
    lo = argparse.Namespace(users=args.users, spawn_rate=args.users, long_fraction=long_fraction, model=args.model,
                            raw=False)
    cpu0, ort0 = server.cpu_seconds(), ort_cpu(server)
    run = run_locust(lo, server.url, clip_dir, work, args.seconds)
    cpu1, ort1 = server.cpu_seconds(), ort_cpu(server)
    return {"records": run["records"], "start": run["start"], "cpu_s": (cpu1 or 0) - (cpu0 or 0),
            "ort_cpu_s": (ort1 - ort0) if ort0 is not None and ort1 is not None else None,
            "rss_mb": server.rss_mb(), "processes": len(server.processes())}


def summary(phases: list[dict[str, Any]], source: str) -> dict[str, Any]:
    stats = summarize([(p["records"], p["start"]) for p in phases], source)
    requests = sum(len(p["records"]) for p in phases)  # every request of the phases, ramp-up included
    audio = sum(r[5] for p in phases for r in p["records"] if r[3])
    cpu = sum(p["cpu_s"] for p in phases)
    orts = [p["ort_cpu_s"] for p in phases]
    ort = sum(orts) if None not in orts else None
    per = [round(1000 * p["cpu_s"] / len(p["records"]), 2) for p in phases if p["records"]]
    out = {"requests": requests, "audio_s": round(audio, 1), "cpu_s": round(cpu, 2),
           "cpu_ms_per_request": round(1000 * cpu / requests, 2) if requests else None,
           "cpu_ms_per_request_by_phase": per,
           "ort_cpu_ms_per_request": round(1000 * ort / requests, 2) if ort is not None and requests else None,
           "outside_ort_ms_per_request": round(1000 * (cpu - ort) / requests, 2) if ort is not None and requests
           else None,
           "cpu_efficiency": round(ort / cpu, 3) if ort is not None and cpu else None,
           "cpu_ms_per_audio_s": round(1000 * cpu / audio, 2) if audio else None,
           "requests_per_s": stats["total"]["requests_per_s"], "audio_s_per_s": stats["total"]["audio_s_per_s"],
           "latency_ms": stats["total"]["latency_ms"], "failures": stats["total"]["failures"],
           "clip_3s": clip_3s([[r for r in p["records"] if r[0] >= p["start"]] for p in phases]),
           "rss_mb": max(p["rss_mb"] or 0 for p in phases), "processes": phases[-1]["processes"]}
    return out


def markdown(args: argparse.Namespace, out: dict[str, Any]) -> str:
    """The comparison as a table, with the command that made it."""
    command = " ".join(["python -m tools.loadtest.ab", *(f"--variant '{v}'" for v in args.variant),
                        f"--kind {args.kind}", f"-u {args.users}", f"-t {args.seconds}", f"--rounds {args.rounds}",
                        *(["--wav"] if args.wav else [])])
    lines = [f"# {args.title}", "", f"`{command}` on {out['when']}: every variant started once, then "
             f"{args.rounds} rounds of {args.seconds} s of locust load each ({args.users} users, "
             f"{'1-5 s keyword clips' if args.kind == 'short' else 'keyword clips and 10% 10-30 s files'}"
             f"{', the short ones as 16-bit WAV' if args.wav else ''}), in "
             f"rotating order. Load average before {[round(x, 2) for x in out['load_avg_before']]}, after "
             f"{[round(x, 2) for x in out['load_avg_after']]}.", "",
             "| variant | environment | CPU ms / request | onnxruntime | outside it | efficiency | requests/s | "
             "audio s/s | p50 / p99 ms | 3 s clip p99 ms | failures | RSS MB (processes) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in out["results"].items():
        env = ", ".join(f"`{k}={v}`" for k, v in out["variants"][name].items()) or "(defaults)"
        lat = r["latency_ms"]
        r = {k: "—" if v is None else v for k, v in r.items()}  # no onnxruntime counter (e.g. the front end alone)
        lines.append(f"| {name} | {env} | {r['cpu_ms_per_request']} | {r['ort_cpu_ms_per_request']} | "
                     f"{r['outside_ort_ms_per_request']} | {r['cpu_efficiency']} | {r['requests_per_s']} | "
                     f"{r['audio_s_per_s']} | {lat['p50']} / {lat['p99']} | {r['clip_3s'].get('p99')} | "
                     f"{r['failures']} | {r['rss_mb']} ({r['processes']}) |")
    lines += ["", "CPU is the server's, all its processes (/proc); onnxruntime's is the session calls' thread CPU "
              "(`diffres_inference_cpu_seconds_total`); efficiency = onnxruntime CPU / server CPU. Throughput "
              "depends on what else the machine does; CPU per request hardly does.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = args.work
    clip_dir = work / ("clips-wav" if args.wav else "clips")
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cliplib.build(clip_dir, ROOT.parent / "shared" / "data" / args.model, 16000, seed=args.seed, short_wav=args.wav)
    source = cliplib.load(clip_dir)[0]
    long_fraction = 0.0 if args.kind == "short" else 0.1
    base_env = {"DIFFRES_MODEL_DIR": str(MODELS_DIR), "DIFFRES_DEFAULT_MODEL": args.model}
    servers: dict[str, Server] = {}
    phases: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in args.variants}
    load_before = os.getloadavg()
    try:
        for name, env in args.variants:
            server = Server({**base_env, **env}, work / f"server-{name}.log", 120, cwd=ROOT)
            if env.get("LOADTEST_SERVER"):  # another module run as the server, e.g. tools.loadtest.floor
                server.command = (env["LOADTEST_SERVER"],)
            servers[name] = server.__enter__()
        for name in servers:  # warm-up: connections, first calls, every shape once
            run_locust(argparse.Namespace(users=args.users, spawn_rate=args.users, long_fraction=long_fraction,
                                          model=args.model, raw=False), servers[name].url, clip_dir, work, 4)
        for i in range(args.rounds):
            names = list(servers)
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                phases[name].append(phase(args, servers[name], clip_dir, work, long_fraction))
                p = phases[name][-1]
                print(f"round {i + 1} {name}: {len(p['records'])} requests, {p['cpu_s']:.2f} CPU s "
                      f"({1000 * p['cpu_s'] / max(1, len(p['records'])):.2f} ms/request)", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    results = {name: summary(ph, source) for name, ph in phases.items()}
    first = results[args.variants[0][0]]
    for r in results.values():
        r["vs_first"] = {k: round(r[k] / first[k], 3) if r.get(k) and first.get(k) else None
                         for k in ("cpu_ms_per_request", "outside_ort_ms_per_request", "requests_per_s",
                                   "audio_s_per_s")}
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kind": args.kind, "users": args.users,
           "seconds": args.seconds, "rounds": args.rounds, "variants": dict(args.variants),
           "load_avg_before": load_before, "load_avg_after": os.getloadavg(), "results": results}
    (args.out / "ab.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "AB.md").write_text(markdown(args, out))
    for name, r in results.items():
        lat = r["latency_ms"]
        print(f"{name}: CPU {r['cpu_ms_per_request']} ms/request {r['cpu_ms_per_request_by_phase']} (onnxruntime "
              f"{r['ort_cpu_ms_per_request']}, outside {r['outside_ort_ms_per_request']}, efficiency "
              f"{r['cpu_efficiency']}); {r['requests_per_s']} req/s, {r['audio_s_per_s']} audio s/s, p50/p99 "
              f"{lat['p50']}/{lat['p99']} ms (3 s clips p99 {r['clip_3s'].get('p99')}), {r['failures']} failures; "
              f"RSS {r['rss_mb']} MB in "
              f"{r['processes']} process(es); vs first {r['vs_first']}")
    print(f"load average before {[round(x, 2) for x in load_before]}, after "
          f"{[round(x, 2) for x in os.getloadavg()]}; {args.out / 'AB.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
