"""`python -m tools.loadtest` (= `make loadtest`): service throughput under locust vs the in-process ceiling,
and where the server's CPU goes.

Starts the service on 127.0.0.1 and a free port, then alternates in-process reference slices
(the same model at batch 16 and batch 1 on 3 s clips, tools/loadtest/inprocess.py) and locust load
rounds of each traffic (`short`: the 1-5 s keyword clips only; `mixed`: with --long-fraction of
10-30 s files), reference, short, reference, mixed, ..., reference, so all see the same share of
whatever else the machine is doing; each load round is compared with the slices on either side
of it. Over every round the server's CPU time (all its processes, /proc) and onnxruntime's
(diffres_inference_cpu_seconds_total) give the CPU per request outside onnxruntime and the CPU
efficiency (onnxruntime CPU / server CPU). Then, with py-spy, a short extra locust phase of short
clips is sampled (`--nonblocking`: the server is never paused) and summarised (tools/loadtest/profile.py).
Bounded in users and time; the server, locust and py-spy are stopped on every exit path. Writes
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
TRAFFIC = ("short", "mixed")
CLIP_3S = (2.75, 3.25)  # "a 3 s clip": most real keyword clips are 3.07 s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("-u", "--users", type=int, default=16, help="concurrent locust users (default 16)")
    p.add_argument("-r", "--spawn-rate", type=float, default=16, help="users started per second")
    p.add_argument("-t", "--run-time", type=int, default=60, help="seconds of load per traffic (default 60)")
    p.add_argument("--rounds", type=int, default=3, help="load rounds per traffic, each between two baseline slices "
                                                         "(default 3)")
    p.add_argument("--traffic", default="short,mixed", help="traffics to load, in turn: short (1-5 s clips only), "
                                                            "mixed (with --long-fraction long files); default both")
    p.add_argument("--profile-seconds", type=int, default=10, help="py-spy phases after the rounds (all threads, "
                                                                   "then the GIL holder); 0: none (default 10)")
    p.add_argument("--workers", type=int, default=0, help="DIFFRES_WORKERS of the server (default: its own)")
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
    args.traffic = [t.strip() for t in args.traffic.split(",") if t.strip()]
    if not args.traffic or set(args.traffic) - set(TRAFFIC) or not 0 <= args.profile_seconds <= 120:
        p.error(f"--traffic must name some of {TRAFFIC}; --profile-seconds 0..120")
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
    """The server's CPU seconds, onnxruntime's, uploaded and model-run audio, and the client's CPU, over load rounds.

    Audio seconds per CPU second depends less than throughput on how much CPU other work leaves
    us: on a shared machine it is a second view of the comparison with the in-process run. Model-run
    audio (the samples sent to onnxruntime, padding included) against uploaded audio says how much
    of the gap is work the service does on purpose: long files' overlapping windows, and padding.
    onnxruntime's own CPU seconds (the session calls' thread CPU time) against the server's say how much
    of the server's CPU is the model, and what a request costs outside it.
    """

    COUNTERS = {"audio": "diffres_audio_seconds_total", "sent": "diffres_batch_samples_total",
                "padding": "diffres_batch_padding_samples_total", "ort_cpu": "diffres_inference_cpu_seconds_total"}

    def __init__(self, server: Server, sample_rate: int) -> None:
        self.server = server
        self.sample_rate = sample_rate
        self.totals = dict.fromkeys(self.COUNTERS, 0.0)
        self.server_cpu = self.client_cpu = 0.0
        self.requests = 0

    def _counters(self) -> dict[str, float]:
        """Every server process's counters, summed (worker processes each count their own)."""
        by_process = getattr(self.server, "metrics_by_process", None)
        texts = by_process() if by_process is not None else [get(f"{self.server.url}/metrics").decode()]
        return {key: sum(metric_sum(t, name) for t in texts) for key, name in self.COUNTERS.items()}

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
        if isinstance(result, dict):
            self.requests += len(result.get("records", []))
        return result

    def summary(self) -> dict[str, Any]:
        cpu, audio = self.server_cpu, self.totals["audio"]
        sent_s = self.totals["sent"] / self.sample_rate
        padding_s = self.totals["padding"] / self.sample_rate
        out = {"server_cpu_s": round(cpu, 1), "server_audio_s": round(audio, 1),
               "audio_s_per_cpu_s": round(audio / cpu, 2) if cpu else None,
               "model_run_s": round(sent_s, 1), "model_padding_s": round(padding_s, 1),
               "model_run_per_audio_s": round(sent_s / audio, 3) if audio else None,
               "client_cpu_s": round(self.client_cpu, 1)}
        ort, n = self.totals["ort_cpu"], self.requests
        if n and cpu:
            out.update({"requests": n, "onnxruntime_cpu_s": round(ort, 2),
                        "cpu_ms_per_request": round(1000 * cpu / n, 2),
                        "onnxruntime_ms_per_request": round(1000 * ort / n, 2),
                        "outside_onnxruntime_ms_per_request": round(1000 * (cpu - ort) / n, 2),
                        "cpu_efficiency": round(ort / cpu, 3)})
        return out


def run_locust(args: argparse.Namespace, url: str, clip_dir: Path, work: Path, seconds: int,
               long_fraction: float | None = None) -> dict[str, Any]:
    """One headless locust run (long_fraction: args.long_fraction unless given); its raw records and steady-state
    start."""
    out = work / "locust-records.json"
    out.unlink(missing_ok=True)
    fraction = args.long_fraction if long_fraction is None else long_fraction
    env = {**os.environ, "LOADTEST_CLIPS": str(clip_dir), "LOADTEST_RECORDS": str(out),
           "LOADTEST_LONG_FRACTION": str(fraction), "LOADTEST_MODEL": args.model,
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


def clip_3s(runs: list[list[Any]]) -> dict[str, Any]:
    """Latency of the answered requests whose clip is about 3 s long (CLIP_3S), over the rounds' steady state."""
    ms = sorted((r[1] - r[0]) * 1000 for records in runs for r in records if r[3] and CLIP_3S[0] <= r[5] <= CLIP_3S[1])
    if not ms:
        return {"requests": 0}
    import numpy as np

    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"requests": len(ms), "seconds": list(CLIP_3S), "p50": round(float(p50), 1), "p95": round(float(p95), 1),
            "p99": round(float(p99), 1)}


def profile_phases(args: argparse.Namespace, server: Server, clip_dir: Path, work: Path) -> dict[str, Any]:
    """py-spy (`--nonblocking`) on the server during extra locust phases of short clips: all active threads,
    then only the thread holding the GIL (the Python work); summarised (tools/loadtest/profile.py)."""
    from tools.loadtest.profile import Sampler, summarise

    if not args.profile_seconds:
        return {}
    if not Sampler.available():
        print("py-spy not installed (pip install py-spy, the load extra): no profile", file=sys.stderr)
        return {}
    out: dict[str, Any] = {}
    pid = server.proc.pid if server.proc is not None else 0
    subprocesses = len(server.processes()) > 1
    for name, gil in (("all_threads", False), ("gil", True)):
        sampler = Sampler(pid, work / f"profile-{name}.txt", args.profile_seconds, gil=gil,
                          subprocesses=subprocesses).start()
        try:
            run_locust(args, server.url, clip_dir, work, args.profile_seconds, long_fraction=0.0)
        except BaseException:
            sampler.stop()
            raise
        raw = sampler.wait()
        out[name] = summarise(raw)
        print(f"profile ({name}): {out[name].get('samples', 0)} samples", flush=True)
    return out


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
    from diffres.server.loaded import layout_here
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
    turns = [(i, kind) for i in range(args.rounds) for kind in args.traffic]
    slice_seconds = args.inproc_seconds / (len(turns) + 1)
    slices: list[dict[str, Any]] = []
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.traffic}
    around: dict[str, list[tuple[int, int]]] = {kind: [] for kind in args.traffic}  # slices before and after each
    fractions = {"short": 0.0, "mixed": args.long_fraction}
    load_before = os.getloadavg()
    server_env = {"DIFFRES_MODEL_DIR": str(args.model_dir.resolve()), "DIFFRES_DEFAULT_MODEL": args.model}
    if args.workers:
        server_env["DIFFRES_WORKERS"] = str(args.workers)
    with Server(server_env, work / "server.log", args.ready_timeout, cwd=ROOT) as server:
        print(f"service ready at {server.url}; {args.rounds} rounds of {load_seconds} s load per traffic "
              f"({', '.join(args.traffic)}) with {args.users} users, between {len(turns) + 1} in-process slices of "
              f"{slice_seconds:.0f} s", flush=True)
        meters = {kind: CpuMeter(server, reference.info.sample_rate) for kind in args.traffic}
        started = time.time()
        rss = [server.rss_mb()]
        for n, (i, kind) in enumerate(turns):
            slices.append(reference.measure(slice_seconds))
            rounds[kind].append(meters[kind].measure(
                lambda kind=kind: run_locust(args, server.url, clip_dir, work, load_seconds, fractions[kind])))
            around[kind].append((n, n + 1))
            rss.append(server.rss_mb())
            print(f"round {i + 1}/{args.rounds} ({kind}) done; server RSS {rss[-1]} MB", flush=True)
        slices.append(reference.measure(slice_seconds))
        metrics = {**server_metrics(server.url), "server_rss_mb": rss, "server_processes": len(server.processes()),
                   "by_traffic": {kind: meters[kind].summary() for kind in args.traffic}}
        main_kind = "mixed" if "mixed" in args.traffic else args.traffic[0]
        metrics.update(meters[main_kind].summary())
        profiles = profile_phases(args, server, clip_dir, work)
        load_after = os.getloadavg()

    traffic = {}
    for kind in args.traffic:
        windows = [(r["records"], r["start"]) for r in rounds[kind]]
        summary = summarize(windows, source)
        summary["rounds"] = [summarize([w], source)["total"] for w in windows]
        summary["around"] = around[kind]
        summary["clip_3s"] = clip_3s([r["records"] for r in rounds[kind]])
        traffic[kind] = summary
    result = write_reports(args, traffic[main_kind], slices, metrics, started,
                           {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": load_after,
                            "model": str(model_path), "model_version": reference.info.version,
                            "model_sample_rate": reference.info.sample_rate,
                            "model_window_s": reference.info.clip_seconds,
                            "model_window_hop_s": reference.info.window_hop_s or reference.info.clip_seconds / 2},
                           traffic=traffic, profiles=profiles)
    total = traffic[main_kind]["total"]
    for kind in args.traffic:
        t, w = traffic[kind]["total"], metrics["by_traffic"][kind]
        lat = t["latency_ms"]
        print(f"{kind}: {t['requests_per_s']} req/s, {t['audio_s_per_s']} audio s/s, p50/p95/p99 "
              f"{lat['p50']}/{lat['p95']}/{lat['p99']} ms, {t['failures']} failures of {t['requests']}; ratio to the "
              f"ceiling {result['traffic'][kind]['ratio']}; server CPU {w.get('cpu_ms_per_request')} ms/request, "
              f"outside onnxruntime {w.get('outside_onnxruntime_ms_per_request')} ms, efficiency "
              f"{w.get('cpu_efficiency')}")
    print(f"in-process: batch 16 {result['in_process']['ceiling_audio_s_per_s']}, batch 1 "
          f"{result['in_process']['batch_1_audio_s_per_s']} audio s/s; padding share {metrics['padding_share']}, "
          f"mean batch {metrics['mean_batch_size']}; load average before {[round(x, 2) for x in load_before]}, "
          f"after {[round(x, 2) for x in load_after]}")
    print(f"reports: {args.out / 'LOADTEST.md'}, {args.out / 'loadtest.json'}")
    if total["requests"] == 0 or total["failures"] > args.max_failure_rate * total["requests"]:
        print(f"too many failures: {total['failures']} of {total['requests']}", file=sys.stderr)
        return 1
    if args.enforce_goal and not result["goal_met"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
