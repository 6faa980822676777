"""`python -m tools.loadtest.ray_bench`: 2 Ray Serve replicas vs the plain service, same clips, same clients.

Alternates the plain service (`diffres serve`) and the service on Ray (`python -m diffres.server.ray_main`),
one at a time, each on 127.0.0.1 and free ports, --rounds times (plain, ray, plain, ray, ...), so
both see the same share of whatever else the machine does. On each: one locust user posting short
clips back to back (latency: the Ray proxy's overhead at p50/p99), then --users users with the
load test's mix (throughput). Same locustfile, same clip set, same users as `make loadtest`.
On one machine Ray cannot add CPU, only overhead: the goal is Ray >= 0.9x the plain throughput.
Throughput on a shared machine also depends on the CPU share the scheduler gives each side, and
Ray runs more processes (proxy, replicas, raylet, GCS), which win a bigger share under contention;
so the CPU seconds of each service's whole process tree are measured too, and audio seconds per
CPU second is the comparison that contention does not bias.
Writes reports/ray_bench.json and reports/RAY_BENCH.md; everything started is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffres.cpu import available_cpus
from diffres.models import MODELS_DIR
from diffres.runner import OnnxModel
from tools.loadtest import clips as cliplib
from tools.loadtest.__main__ import run_locust
from tools.loadtest.ray_server import RayServer, session_processes
from tools.loadtest.server import Server
from tools.loadtest.stats import summarize

ROOT = Path(__file__).resolve().parents[2]
GOAL = 0.9
KINDS = ("plain", "ray")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest.ray_bench", description=__doc__.splitlines()[0])
    p.add_argument("-u", "--users", type=int, default=16, help="locust users of the throughput runs (default 16)")
    p.add_argument("-t", "--seconds", type=int, default=30, help="seconds of each throughput run (default 30)")
    p.add_argument("--latency-seconds", type=int, default=15, help="seconds of each 1-user run (default 15)")
    p.add_argument("--rounds", type=int, default=2, help="plain/ray alternations (default 2)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--model", default="keywords")
    p.add_argument("--long-fraction", type=float, default=0.1, help="share of 10-30 s clips (default 0.1)")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 1 <= args.users <= 64 or not 5 <= args.seconds <= 300 or not 1 <= args.rounds <= 5:
        p.error("users 1..64, seconds 5..300, rounds 1..5")
    return args


def locust_args(args: argparse.Namespace, users: int, long_fraction: float) -> argparse.Namespace:
    """What loadtest's run_locust reads, for one run."""
    return argparse.Namespace(users=users, spawn_rate=users, long_fraction=long_fraction, model=args.model, raw=False)


@contextmanager
def service(kind: str, env: dict[str, str], work: Path, replicas: int) -> Iterator[tuple[str, int]]:
    """The plain service or the service on Ray, ready; its URL and the session id of its processes."""
    if kind == "plain":
        with Server(env, work / "plain.log", ready_timeout=120, cwd=ROOT) as server:
            assert server.proc is not None
            yield server.url, server.proc.pid
    else:
        with RayServer(env, work / "ray.log", replicas=replicas) as ray_server:
            assert ray_server.proc is not None
            yield ray_server.url, ray_server.proc.pid


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU seconds of every process in session `sid` (Linux /proc)."""
    total = 0
    for pid in session_processes(sid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace, url: str, sid: int, clip_dir: Path, work: Path) -> dict[str, Any]:
    """Records of the 1-user latency run and of the loaded run on one service, and the load's CPU seconds."""
    latency = run_locust(locust_args(args, 1, 0.0), url, clip_dir, work, args.latency_seconds)
    cpu0 = session_cpu_seconds(sid)
    load = run_locust(locust_args(args, args.users, args.long_fraction), url, clip_dir, work, args.seconds)
    cpu = session_cpu_seconds(sid) - cpu0
    audio = sum(r[5] for r in load["records"] if r[3])  # every answered request of the run, ramp-up included
    return {"latency": (latency["records"], latency["start"]), "load": (load["records"], load["start"]),
            "cpu_s": cpu, "audio_s": audio}


def compare(runs: dict[str, list[dict[str, Any]]], source: str) -> dict[str, Any]:
    """Both services summed over their rounds; ratios and the proxy's latency overhead."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        out[kind] = {"load": summarize([r["load"] for r in runs[kind]], source),
                     "latency_1_user": summarize([r["latency"] for r in runs[kind]], source)["total"],
                     "load_per_round": [summarize([r["load"]], source)["total"] for r in runs[kind]]}
    plain, ray = out["plain"]["load"]["total"], out["ray"]["load"]["total"]
    out["throughput_ratio"] = round(ray["audio_s_per_s"] / plain["audio_s_per_s"], 3)
    out["requests_ratio"] = round(ray["requests_per_s"] / plain["requests_per_s"], 3)
    out["goal"], out["goal_met"] = GOAL, out["throughput_ratio"] >= GOAL
    lp, lr = out["plain"]["latency_1_user"]["latency_ms"], out["ray"]["latency_1_user"]["latency_ms"]
    out["proxy_overhead_ms"] = {q: round(lr[q] - lp[q], 1) for q in ("p50", "p99")}
    for kind in KINDS:
        cpu = sum(r["cpu_s"] for r in runs[kind])
        out[kind]["cpu_s"] = round(cpu, 1)
        out[kind]["audio_s_per_cpu_s"] = round(sum(r["audio_s"] for r in runs[kind]) / cpu, 2) if cpu else None
    if out["plain"]["audio_s_per_cpu_s"] and out["ray"]["audio_s_per_cpu_s"]:
        out["cpu_efficiency_ratio"] = round(out["ray"]["audio_s_per_cpu_s"] / out["plain"]["audio_s_per_cpu_s"], 3)
    return out


def markdown(r: dict[str, Any]) -> str:
    def row(name: str, b: dict[str, Any]) -> str:
        lat = b["latency_ms"]
        return (f"| {name} | {b['requests']} | {b['failures']} | {b['requests_per_s']} | {b['audio_s_per_s']} "
                f"| {lat['p50']} | {lat['p99']} |")

    head = "| service | requests | failures | requests/s | audio s/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|"
    over = r["proxy_overhead_ms"]
    return (f"# Ray Serve ({r['replicas']} replicas) vs the plain service\n\n`python -m tools.loadtest.ray_bench` "
            f"({r['finished']}); model `{r['model']}`, {r['cpus']} CPUs, clips from {r['clip_source']}; "
            f"{r['rounds']} alternations of plain and Ray, each: {r['latency_seconds']} s with 1 locust user "
            f"(short clips), then {r['seconds']} s with {r['users']} users ({r['long_fraction']:.0%} 10-30 s clips). "
            f"Load average before/after: {r['load_avg_before']} / {r['load_avg_after']}.\n\n"
            f"## Throughput, {r['users']} users\n\n{head}\n{row('plain (uvicorn)', r['plain']['load']['total'])}\n"
            f"{row('Ray Serve', r['ray']['load']['total'])}\n\n"
            f"Ray / plain: **{r['throughput_ratio']}** in audio seconds per second ({r['requests_ratio']} in "
            f"requests/s); goal >= {r['goal']}: **{'met' if r['goal_met'] else 'not met'}**. Per round (audio s/s): "
            f"plain {[b['audio_s_per_s'] for b in r['plain']['load_per_round']]}, "
            f"Ray {[b['audio_s_per_s'] for b in r['ray']['load_per_round']]}.\n\n"
            f"Audio seconds per CPU second of the whole process tree (not biased by the CPU share each side "
            f"wins on a shared machine): plain {r['plain']['audio_s_per_cpu_s']} ({r['plain']['cpu_s']} CPU s), "
            f"Ray {r['ray']['audio_s_per_cpu_s']} ({r['ray']['cpu_s']} CPU s): Ray / plain "
            f"**{r.get('cpu_efficiency_ratio')}**.\n\n"
            f"## Latency, 1 user (the proxy's overhead)\n\n{head}\n"
            f"{row('plain (uvicorn)', r['plain']['latency_1_user'])}\n"
            f"{row('Ray Serve', r['ray']['latency_1_user'])}\n\n"
            f"Ray proxy overhead: **{over['p50']} ms at p50, {over['p99']} ms at p99**.\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks (servers stop) on kill too
    model_path = MODELS_DIR / f"{args.model}.onnx"
    work = args.out / "tmp" / "ray_bench"
    clip_dir = work / "clips"
    rate = OnnxModel.load(model_path, intra_op_threads=1).info.sample_rate
    cliplib.build(clip_dir, ROOT.parent / "shared" / "data" / args.model, rate, seed=args.seed)
    source = cliplib.load(clip_dir)[0]
    env = {"DIFFRES_MODEL_DIR": str(MODELS_DIR), "DIFFRES_DEFAULT_MODEL": args.model}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    load_before = os.getloadavg()
    for i in range(args.rounds):
        for kind in KINDS:
            with service(kind, env, work, args.replicas) as (url, sid):
                runs[kind].append(measure(args, url, sid, clip_dir, work))
            print(f"round {i + 1}/{args.rounds}: {kind} done", flush=True)
    result = {**compare(runs, source), "model": args.model, "replicas": args.replicas, "users": args.users,
              "seconds": args.seconds, "latency_seconds": args.latency_seconds, "rounds": args.rounds,
              "long_fraction": args.long_fraction, "cpus": available_cpus(), "clip_source": source,
              "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()],
              "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "RAY_BENCH.md").write_text(markdown(result))
    print(f"Ray/plain throughput {result['throughput_ratio']} (goal {GOAL}: "
          f"{'met' if result['goal_met'] else 'NOT met'}); per CPU second {result.get('cpu_efficiency_ratio')}; "
          f"proxy overhead p50/p99 "
          f"{result['proxy_overhead_ms']['p50']}/{result['proxy_overhead_ms']['p99']} ms; "
          f"reports: {args.out / 'RAY_BENCH.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
