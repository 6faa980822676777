"""`python -m tools.loadtest.protocols`: server CPU per request and throughput of gRPC, HTTP /v2 and /v1/classify.

The same short clips (the load test's clip set, tools/loadtest/clips.py: real keyword clips when
../shared/data has them) go to one `diffres serve` with DIFFRES_GRPC_PORT, three ways:
- `grpc`: OIP v2 ModelInfer with raw tensors (tritonclient.grpc), one row per clip at the model's rate;
- `v2`: OIP v2 over HTTP with binary tensors (tritonclient.http), the same rows;
- `v1`: POST /v1/classify with the clip file as the body (the service decodes and resamples it).
Tensor requests ask for `logits` only, the least a client needs. Each protocol runs closed-loop
phases (N threads, no think time) in rotation, `--rounds` times, so all three see the same share
of whatever else the machine does; the server process's CPU time (/proc) over each phase, divided
by its requests, is the CPU a request costs the server. The client shares the machine: its CPU is
reported beside. Writes protocols.json and PROTOCOLS.md into --out (report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffres.models import MODELS_DIR
from tools.loadtest import clips as cliplib
from tools.loadtest.report import write_protocol_reports
from tools.loadtest.server import Server, get
from tools.loadtest.stats import Record, summarize

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ("grpc", "v2", "v1")
OUTPUT = "logits"


@dataclass(frozen=True)
class Clip:
    """One clip as each protocol sends it: the file's bytes (/v1) and its samples at the model's rate."""

    name: str
    body: bytes
    content_type: str
    samples: np.ndarray
    seconds: float


Send = Callable[[Clip], bool]  # one request; True when the answer has what the protocol promises


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest.protocols", description=__doc__.splitlines()[0])
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma-separated subset of {PROTOCOLS}")
    p.add_argument("-c", "--concurrency", type=int, default=8, help="requests in flight per phase (default 8)")
    p.add_argument("-s", "--seconds", type=float, default=10, help="seconds per phase (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="phases per protocol, in rotation (default 3)")
    p.add_argument("--clips", type=int, default=60, help="short clips in the set (default 60)")
    p.add_argument("--model", default=os.environ.get("DIFFRES_DEFAULT_MODEL", "keywords"))
    p.add_argument("--model-dir", type=Path, default=Path(os.environ.get("DIFFRES_MODEL_DIR", MODELS_DIR)))
    p.add_argument("--data", type=Path, help="folder of real clips (default ../shared/data/<model>)")
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]
    if not args.protocols or set(args.protocols) - set(PROTOCOLS):
        p.error(f"--protocols must name some of {PROTOCOLS}")
    if not (1 <= args.concurrency <= 256 and 1 <= args.seconds <= 600 and 1 <= args.rounds <= 20):
        p.error("concurrency 1..256, seconds 1..600, rounds 1..20")
    return args


def load_clips(folder: Path, rate: int) -> list[Clip]:
    """The clip set's files, each also decoded to the model's rate by the service's own decoder."""
    from diffres.decode import load_audio

    _, entries = cliplib.load(folder)
    out = []
    for entry in entries:
        path = folder / entry.file
        samples = load_audio(path, rate)
        kind = "flac" if path.suffix == ".flac" else "wav"
        out.append(Clip(entry.name, path.read_bytes(), f"audio/{kind}", samples, len(samples) / rate))
    return out


def grpc_sender(target: str, model: str) -> Send:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(target)
    wanted = [grpcclient.InferRequestedOutput(OUTPUT)]

    def send(clip: Clip) -> bool:
        wave = grpcclient.InferInput("waveform", [1, len(clip.samples)], "FP32")
        wave.set_data_from_numpy(clip.samples[None])  # raw_input_contents
        return client.infer(model, [wave], outputs=wanted, client_timeout=120).as_numpy(OUTPUT) is not None

    return send


def v2_sender(url: str, model: str) -> Send:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    wanted = [httpclient.InferRequestedOutput(OUTPUT, binary_data=True)]

    def send(clip: Clip) -> bool:
        wave = httpclient.InferInput("waveform", [1, len(clip.samples)], "FP32")
        wave.set_data_from_numpy(clip.samples[None], binary_data=True)
        return client.infer(model, [wave], outputs=wanted).as_numpy(OUTPUT) is not None

    return send


def v1_sender(url: str, model: str) -> Send:
    import httpx

    client = httpx.Client(base_url=url, timeout=120)

    def send(clip: Clip) -> bool:
        r = client.post("/v1/classify", params={"model": model, "top_k": 5}, content=clip.body,
                        headers={"Content-Type": clip.content_type})
        return r.status_code == 200 and bool(r.json().get("predictions"))

    return send


def senders(server: Server, model: str) -> dict[str, Callable[[], Send]]:
    """A fresh sender (its own client and connection) per worker thread, by protocol."""
    assert server.grpc_target is not None
    return {"grpc": lambda: grpc_sender(server.grpc_target or "", model),
            "v2": lambda: v2_sender(server.url, model), "v1": lambda: v1_sender(server.url, model)}


def closed_loop(make: Callable[[], Send], clips: list[Clip], protocol: str, concurrency: int,
                seconds: float, offset: int) -> list[Record]:
    """`concurrency` threads, each sending the clips in turn until the phase ends; per-request records."""
    records: list[Record] = []
    lock = threading.Lock()
    stop_at = time.time() + seconds

    def worker(k: int) -> None:
        send = make()
        i = offset + k * 7
        while time.time() < stop_at:
            clip = clips[i % len(clips)]
            i += 1
            start = time.time()
            try:
                ok = send(clip)
            except Exception:  # a failed request is a record, not the end of the run
                ok = False
            with lock:
                records.append((start, time.time(), protocol, ok, 200 if ok else 0, clip.seconds if ok else 0.0))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def phase(server: Server, make: Callable[[], Send], clips: list[Clip], protocol: str, args: argparse.Namespace,
          offset: int) -> dict[str, Any]:
    """One measured phase: records, and the server's and this client's CPU seconds over it."""
    cpu0, client0 = server.cpu_seconds(), time.process_time()
    start = time.time()
    records = closed_loop(make, clips, protocol, args.concurrency, args.seconds, offset)
    cpu1, client1 = server.cpu_seconds(), time.process_time()
    server_cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    return {"protocol": protocol, "records": records, "start": start, "server_cpu_s": server_cpu,
            "client_cpu_s": client1 - client0}


def summary(phases: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """Per protocol: rates and latency over its phases, and CPU per request and per audio second."""
    out: dict[str, Any] = {}
    for protocol in dict.fromkeys(p["protocol"] for p in phases):
        mine = [p for p in phases if p["protocol"] == protocol]
        stats = summarize([(p["records"], p["start"]) for p in mine], source)["total"]
        requests = sum(len(p["records"]) for p in mine)
        audio = sum(r[5] for p in mine for r in p["records"])
        cpus = [p["server_cpu_s"] for p in mine]
        server_cpu = sum(cpus) if None not in cpus else None
        client_cpu = sum(p["client_cpu_s"] for p in mine)
        out[protocol] = {
            **stats, "phases": len(mine), "server_cpu_s": None if server_cpu is None else round(server_cpu, 2),
            "server_cpu_ms_per_request": round(1000 * server_cpu / requests, 2) if server_cpu and requests else None,
            "server_cpu_s_per_audio_s": round(server_cpu / audio, 4) if server_cpu and audio else None,
            "client_cpu_ms_per_request": round(1000 * client_cpu / requests, 2) if requests else None}
    return out


def warm(make: Callable[[], Send], clips: list[Clip], concurrency: int) -> None:
    """A few untimed requests per protocol: connections, first-call allocations."""
    send = make()
    for clip in clips[:max(2, concurrency)]:
        send(clip)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.model_dir / f"{args.model}.onnx").exists():
        print(f"no model at {args.model_dir / args.model}.onnx", file=sys.stderr)
        return 2
    work = args.out / "tmp" / "protocols"
    work.mkdir(parents=True, exist_ok=True)
    env = {"DIFFRES_MODEL_DIR": str(args.model_dir.resolve()), "DIFFRES_DEFAULT_MODEL": args.model}
    with Server(env, work / "server.log", args.ready_timeout, cwd=ROOT, grpc=True) as server:
        rate = int(json.loads(get(f"{server.url}/v2/models/{args.model}"))["parameters"]["sample_rate"])
        data = args.data or ROOT.parent / "shared" / "data" / args.model
        cliplib.build(work / "clips", data, rate, n_short=args.clips, n_long=0, seed=args.seed)
        source = cliplib.load(work / "clips")[0]
        clips = load_clips(work / "clips", rate)
        print(f"service ready at {server.url} (gRPC {server.grpc_target}); {len(clips)} clips from {source}; "
              f"{args.rounds} rounds of {args.seconds:g} s per protocol, {args.concurrency} in flight", flush=True)
        make = senders(server, args.model)
        for protocol in args.protocols:
            warm(make[protocol], clips, args.concurrency)
        started, load_before = time.time(), os.getloadavg()
        phases = []
        for n in range(args.rounds):
            for protocol in args.protocols:
                phases.append(phase(server, make[protocol], clips, protocol, args, offset=n))
                print(f"round {n + 1}, {protocol}: {len(phases[-1]['records'])} requests", flush=True)
        rss = server.rss_mb()
    results = summary(phases, source)
    machine = {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
               "model": args.model, "model_sample_rate": rate, "server_rss_mb": rss}
    write_protocol_reports(args, results, started, machine)
    for protocol, r in results.items():
        print(f"{protocol}: {r['requests_per_s']} req/s, {r['audio_s_per_s']} audio s/s, server "
              f"{r['server_cpu_ms_per_request']} CPU ms/request, p50 {r['latency_ms']['p50']} ms, "
              f"{r['failures']} failures of {r['requests']}")
    print(f"reports: {args.out / 'PROTOCOLS.md'}, {args.out / 'protocols.json'}")
    return 1 if any(r["failures"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
