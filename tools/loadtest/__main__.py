"""`python -m tools.loadtest` (= `make loadtest`): service throughput under locust vs the in-process ceiling.

Starts the service on 127.0.0.1 and a free port, then alternates in-process reference slices
(the same model at batch 16 and batch 1 on 3 s clips, tools/loadtest/inprocess.py) and locust load
rounds (reference, load, reference, ..., reference), so both sides see the same share of
whatever else the machine is doing; each load round is compared with the slices on either side
of it. Bounded in users and time; the server and locust are stopped on every exit path. Writes
reports/loadtest.json and reports/LOADTEST.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from diffres.models import MODELS_DIR
from tools.loadtest import clips as cliplib
from tools.loadtest.report import write_reports
from tools.loadtest.server import Server, get
from tools.loadtest.stats import summarize

ROOT = Path(__file__).resolve().parents[2]
MAX_USERS, MAX_RUN_TIME = 256, 600


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("-u", "--users", type=int, default=16, help="concurrent locust users (default 16)")
    p.add_argument("-r", "--spawn-rate", type=float, default=16, help="users started per second")
    p.add_argument("-t", "--run-time", type=int, default=60, help="seconds of load in all (default 60)")
    p.add_argument("--rounds", type=int, default=3, help="load rounds, each between two baseline slices (default 3)")
    p.add_argument("--inproc-seconds", type=float, default=40, help="in-process reference time in all (default 40)")
    p.add_argument("--model", default=os.environ.get("DIFFRES_DEFAULT_MODEL", "keywords"))
    p.add_argument("--model-dir", type=Path, default=Path(os.environ.get("DIFFRES_MODEL_DIR", MODELS_DIR)))
    p.add_argument("--data", type=Path, help="folder of real clips (default ../shared/data/<model>)")
    p.add_argument("--long-fraction", type=float, default=0.1, help="share of 10-30 s clips (default 0.1)")
    p.add_argument("--short-clips", type=int, default=200)
    p.add_argument("--long-clips", type=int, default=12)
    p.add_argument("--raw", action="store_true", help="post raw audio bodies instead of multipart")
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--goal", type=float, default=0.85, help="service / in-process ratio to meet")
    p.add_argument("--enforce-goal", action="store_true", help="exit 1 when the ratio misses the goal")
    p.add_argument("--max-failure-rate", type=float, default=0.01, help="exit 1 above this share of failed requests")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 1 <= args.users <= MAX_USERS or not 1 <= args.run_time <= MAX_RUN_TIME:
        p.error(f"users must be 1..{MAX_USERS} and run time 1..{MAX_RUN_TIME} s")
    if not 1 <= args.rounds <= args.run_time // 5:
        p.error("rounds must be at least 1 and leave at least 5 s of load per round")
    return args


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of one metric family (all label sets)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def server_metrics(url: str) -> dict[str, Any]:
    text = get(f"{url}/metrics").decode()
    batches = metric_sum(text, "diffres_batch_size_count")
    samples = metric_sum(text, "diffres_batch_samples_total")
    return {"batches": int(batches),
            "mean_batch_size": round(metric_sum(text, "diffres_batch_size_sum") / batches, 2) if batches else None,
            "padding_share": round(metric_sum(text, "diffres_batch_padding_samples_total") / samples, 4)
            if samples else None,
            "rejected_503": int(metric_sum(text, "diffres_rejected_total"))}


def children_cpu() -> float:
    """CPU seconds of finished, waited-for child processes (here: locust once it has exited)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """The server's CPU seconds, uploaded and model-run audio, and the client's CPU, over load rounds.

    Audio seconds per CPU second depends less than throughput on how much CPU other work leaves
    us: on a shared machine it is a second view of the comparison with the in-process run. Model-run
    audio (the samples sent to onnxruntime, padding included) against uploaded audio says how much
    of the gap is work the service does on purpose: long files' overlapping windows, and padding.
    """

    COUNTERS = {"audio": "diffres_audio_seconds_total", "sent": "diffres_batch_samples_total",
                "padding": "diffres_batch_padding_samples_total"}

    def __init__(self, server: Server, sample_rate: int) -> None:
        self.server = server
        self.sample_rate = sample_rate
        self.totals = dict.fromkeys(self.COUNTERS, 0.0)
        self.server_cpu = self.client_cpu = 0.0

    def _counters(self) -> dict[str, float]:
        text = get(f"{self.server.url}/metrics").decode()
        return {key: metric_sum(text, name) for key, name in self.COUNTERS.items()}

    def measure(self, run: Any) -> Any:
        before = self._counters()
        cpu0, client0 = self.server.cpu_seconds(), children_cpu()
        result = run()
        after = self._counters()
        for key in self.totals:
            self.totals[key] += after[key] - before[key]
        cpu1 = self.server.cpu_seconds()
        self.server_cpu += (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else 0.0
        self.client_cpu += children_cpu() - client0
        return result

    def summary(self) -> dict[str, Any]:
        cpu, audio = self.server_cpu, self.totals["audio"]
        sent_s = self.totals["sent"] / self.sample_rate
        padding_s = self.totals["padding"] / self.sample_rate
        return {"server_cpu_s": round(cpu, 1), "server_audio_s": round(audio, 1),
                "audio_s_per_cpu_s": round(audio / cpu, 2) if cpu else None,
                "model_run_s": round(sent_s, 1), "model_padding_s": round(padding_s, 1),
                "model_run_per_audio_s": round(sent_s / audio, 3) if audio else None,
                "client_cpu_s": round(self.client_cpu, 1)}


def run_locust(args: argparse.Namespace, url: str, clip_dir: Path, work: Path, seconds: int) -> dict[str, Any]:
    """One headless locust run; its raw records and steady-state start."""
    out = work / "locust-records.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "LOADTEST_CLIPS": str(clip_dir), "LOADTEST_RECORDS": str(out),
           "LOADTEST_LONG_FRACTION": str(args.long_fraction), "LOADTEST_MODEL": args.model,
           "LOADTEST_RAW": "1" if args.raw else "0"}
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "tools" / "loadtest" / "locustfile.py"), "--headless",
           "-u", str(args.users), "-r", str(args.spawn_rate), "--run-time", f"{seconds}s",
           "--host", url, "--csv", str(work / "locust"), "--only-summary", "--stop-timeout", "30",
           "--loglevel", "WARNING"]
    with (work / "locust.log").open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=seconds + 120)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    if not out.exists():
        raise RuntimeError(f"locust wrote no records (exit {proc.returncode}); see {work / 'locust.log'}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill too
    model_path = args.model_dir / f"{args.model}.onnx"
    if not model_path.exists():
        print(f"no model at {model_path}", file=sys.stderr)
        return 2
    work = args.out / "tmp" / "loadtest"
    clip_dir = work / "clips"
    work.mkdir(parents=True, exist_ok=True)
    (work / "locust.log").unlink(missing_ok=True)

    from diffres.server.config import (
        Settings,  # imported late: `--help` needs no onnxruntime
    )
    from diffres.server.registry import layout_here
    from tools.loadtest.inprocess import Reference

    settings = Settings(model_dir=args.model_dir, default_model=args.model)  # what the server will read
    layout = layout_here(settings)
    reference = Reference(model_path, providers=settings.providers, intra_op_threads=layout.threads,
                          inter_op_threads=settings.inter_op_threads, calls=layout.calls)
    data = args.data or ROOT.parent / "shared" / "data" / args.model
    clips = cliplib.build(clip_dir, data, reference.info.sample_rate, n_short=args.short_clips,
                          n_long=args.long_clips, seed=args.seed)
    source = cliplib.load(clip_dir)[0]
    print(f"{len(clips)} clips from {source}", flush=True)

    load_seconds = args.run_time // args.rounds
    slice_seconds = args.inproc_seconds / (args.rounds + 1)
    slices: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    server_env = {"DIFFRES_MODEL_DIR": str(args.model_dir.resolve()), "DIFFRES_DEFAULT_MODEL": args.model}
    with Server(server_env, work / "server.log", args.ready_timeout, cwd=ROOT) as server:
        print(f"service ready at {server.url}; {args.rounds} rounds of {load_seconds} s load with "
              f"{args.users} users, between {args.rounds + 1} in-process slices of {slice_seconds:.0f} s", flush=True)
        meter = CpuMeter(server, reference.info.sample_rate)
        started = time.time()
        rss = [server.rss_mb()]
        for i in range(args.rounds + 1):
            slices.append(reference.measure(slice_seconds))
            if i < args.rounds:
                rounds.append(meter.measure(lambda: run_locust(args, server.url, clip_dir, work, load_seconds)))
                rss.append(server.rss_mb())
                print(f"round {i + 1}/{args.rounds} done; server RSS {rss[-1]} MB", flush=True)
        metrics = {**server_metrics(server.url), **meter.summary(), "server_rss_mb": rss}
        load_after = os.getloadavg()

    windows = [(r["records"], r["start"]) for r in rounds]
    service = summarize(windows, source)
    service["rounds"] = [summarize([w], source)["total"] for w in windows]
    result = write_reports(args, service, slices, metrics, started,
                           {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": load_after,
                            "model": str(model_path), "model_version": reference.info.version,
                            "model_sample_rate": reference.info.sample_rate})
    total = service["total"]
    lat = total["latency_ms"]
    print(f"service: {total['requests_per_s']} req/s, {total['audio_s_per_s']} audio s/s, p50/p95/p99 "
          f"{lat['p50']}/{lat['p95']}/{lat['p99']} ms, {total['failures']} failures of {total['requests']}; "
          f"in-process: batch 16 {result['in_process']['ceiling_audio_s_per_s']}, batch 1 "
          f"{result['in_process']['batch_1_audio_s_per_s']} audio s/s; ratio to the ceiling {result['ratio']} "
          f"(goal {args.goal}: {'met' if result['goal_met'] else 'NOT met'}), to batch 1 {result['ratio_vs_batch_1']}; "
          f"padding share {metrics['padding_share']}, mean batch {metrics['mean_batch_size']}")
    print(f"reports: {args.out / 'LOADTEST.md'}, {args.out / 'loadtest.json'}")
    if total["requests"] == 0 or total["failures"] > args.max_failure_rate * total["requests"]:
        print(f"too many failures: {total['failures']} of {total['requests']}", file=sys.stderr)
        return 1
    if args.enforce_goal and not result["goal_met"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
