"""Memory and cost-per-audio-second probe, run as a fresh subprocess per input length so that
ru_maxrss is this length's peak alone:  python -m tools.bench.longrun MODEL --seconds 600 [...]

Imports numpy, onnxruntime and diffres' runtime (the pipeline the service runs), never torch, so
the baseline RSS is what a service process has. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffres.clock import interleaved, paired_ratio, summary
from diffres.contract import LOGITS
from diffres.decode import AudioInfo
from diffres.pipeline import ClassifyOptions, Opened, Pipeline
from diffres.runner import OnnxModel, RowOutput, SessionRunner
from diffres.windows import WindowPlan

MB = 1 << 20
# onnxruntime memory options (make_session keywords) the probe can try; peak RSS differs a lot on long inputs
MEMORY_MODES = {"default": {}, "no-mem-pattern": {"mem_pattern": False}, "no-arena": {"cpu_arena": False}}


def load(path: str, threads: int, memory: str = "default") -> OnnxModel:
    return OnnxModel.load(path, providers=["CPUExecutionProvider"], intra_op_threads=threads, **MEMORY_MODES[memory])


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def proc_status_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (this address space's peak) from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def current_rss_bytes() -> int:
    return proc_status_bytes("VmRSS")


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((1, n))).astype(np.float32)


def single_call(path: str, seconds: float, sr: int, threads: int, repeats: int, ref_seconds: float | None,
                memory: str = "default") -> dict:
    """One session call on the whole input. When ref_seconds < seconds, the reference length runs
    interleaved with it, so the cost-per-audio-second ratio is paired (and the peak stays this length's)."""
    model = load(path, threads, memory)
    base_max, base_cur = max_rss_bytes(), current_rss_bytes()
    x = noise(int(seconds * sr))
    fns = {"main": lambda: model.run_padded(x, outputs=[LOGITS])}
    paired = ref_seconds is not None and ref_seconds < seconds
    if paired:
        ref = noise(int(ref_seconds * sr), seed=1)
        fns["ref"] = lambda: model.run_padded(ref, outputs=[LOGITS])
    times = interleaved(fns, repeats, warmup=1 if seconds >= 60 else 3)  # the first call sizes the arena
    out = {
        "method": "single session call on the whole input",
        "ort_memory": memory,
        "seconds": seconds,
        "samples": x.shape[1],
        "input_mb": x.nbytes / MB,
        "time_per_call_s": summary(times["main"]),
        "time_per_audio_s": summary([t / seconds for t in times["main"]]),
        "baseline_rss_mb": base_cur / MB,
        "baseline_max_rss_mb": base_max / MB,
        "peak_rss_mb": max_rss_bytes() / MB,
        "peak_vmhwm_mb": proc_status_bytes("VmHWM") / MB,  # cross-check of ru_maxrss
    }
    out["peak_above_baseline_mb"] = out["peak_rss_mb"] - out["baseline_max_rss_mb"]
    if paired:
        ratio = paired_ratio([t / seconds for t in times["main"]], [t / ref_seconds for t in times["ref"]])
        out["ref_seconds"] = ref_seconds
        out["ref_time_per_audio_s"] = summary([t / ref_seconds for t in times["ref"]])
        out["time_per_audio_s_vs_ref"] = ratio
    return out


BLOCK_SAMPLES = 1 << 16  # a decoder's read size (the service reads 64 Ki samples at a time)


class TiledNoise:
    """A recording of `n` samples arriving block by block (tiled noise; content sets no cost): the Decoder
    protocol of diffres.decode, so the pipeline reads it as it reads a file, never holding it whole."""

    def __init__(self, n: int, tile: np.ndarray, sample_rate: int) -> None:
        self.n, self.tile, self.position = n, tile, 0
        self.info = AudioInfo(sample_rate, 1, n, "RAW", "FLOAT")

    def read(self, frames: int) -> np.ndarray:
        lo, hi = self.position, min(self.n, self.position + frames)
        self.position = hi
        return np.take(self.tile, np.arange(lo, hi) % self.tile.size)[:, None]

    def check_complete(self, frames_read: int) -> None:
        """Generated: always complete."""

    def close(self) -> None:
        self.position = self.n


class TimedRunner(SessionRunner):
    """The session runner, timing each call and counting its rows."""

    def __init__(self, model: OnnxModel, slots: int) -> None:
        super().__init__(model, slots)
        self.call_times: list[float] = []
        self.sizes: list[int] = []

    def __call__(self, rows: Sequence[np.ndarray], outputs: Sequence[str]) -> list[RowOutput]:
        t0 = time.perf_counter()
        result = super().__call__(rows, outputs)
        self.call_times.append(time.perf_counter() - t0)
        self.sizes.append(len(rows))
        return result


def windowed(path: str, seconds: float, sr: int, threads: int, window_s: float, overlap: float, batch: int,
             memory: str = "default") -> dict:
    """Long audio as the service runs it: the pipeline, with clip-length windows with overlap, `batch` per call.

    The recording is decoded block by block and windows are run as they come, so neither the hour's
    samples nor its windows are ever held at once. As in the service, the hop is rounded to whole
    spectrogram frames.
    """
    model = load(path, threads, memory)
    n = int(seconds * sr)
    plan = WindowPlan.for_model(model.info, window_s=window_s, window_hop_s=window_s * (1.0 - overlap),
                                long_audio_s=window_s)
    pipeline = Pipeline(model.info, plan)
    base_max, base_cur = max_rss_bytes(), current_rss_bytes()
    model.run([np.zeros(plan.window, np.float32)] * batch)  # warm-up at the batch shape
    runner = TimedRunner(model, batch)
    t_start = time.perf_counter()
    decoder = TiledNoise(n, noise(10 * sr)[0], sr)
    result = pipeline.classify(Opened(decoder, decoder.info, t_start, 0.0), runner, ClassifyOptions())
    wall = time.perf_counter() - t_start
    call_times, sizes = runner.call_times, runner.sizes
    full = [t / b for t, b in zip(call_times, sizes) if b == batch] or [t / b for t, b in zip(call_times, sizes)]
    n_windows = sum(sizes)
    assert result.windowing is not None and result.windowing.windows == n_windows
    cutter = "diffres.pipeline (the service's pipeline: its window plan and cutter; last window end-aligned)"
    out = {
        "method": f"{plan.window / sr:g} s windows, hop {plan.hop / sr:g} s, batch {batch} per onnxruntime call; "
                  f"audio read in {BLOCK_SAMPLES}-sample blocks; windows cut and answered by {cutter}",
        "cutter": cutter,
        "ort_memory": memory,
        "seconds": seconds,
        "samples": n,
        "windows": n_windows,
        "window_seconds": plan.window / sr,
        "hop_seconds": plan.hop / sr,
        "overlap": 1.0 - plan.hop / plan.window,
        "batch": batch,
        "wall_s": wall,
        "time_per_audio_s_wall": wall / seconds,  # includes decoding, cutting and the answer
        # median per-window model time x windows: robust to a transient neighbour load
        "time_per_audio_s": statistics.median(full) * n_windows / seconds,
        "time_per_batch_call_s": summary(call_times),
        "baseline_rss_mb": base_cur / MB,
        "baseline_max_rss_mb": base_max / MB,
        "peak_rss_mb": max_rss_bytes() / MB,
        "peak_vmhwm_mb": proc_status_bytes("VmHWM") / MB,  # cross-check of ru_maxrss
    }
    out["peak_above_baseline_mb"] = out["peak_rss_mb"] - out["baseline_max_rss_mb"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ref-seconds", type=float, default=None, help="paired reference length (single call)")
    p.add_argument("--windowed", action="store_true", help="run as the service does: overlapping windows")
    p.add_argument("--window-seconds", type=float, default=3.0)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--memory", choices=list(MEMORY_MODES), default="default", help="onnxruntime memory options")
    a = p.parse_args(argv)
    if a.windowed:
        out = windowed(a.model, a.seconds, a.sample_rate, a.threads, a.window_seconds, a.overlap, a.batch, a.memory)
    else:
        out = single_call(a.model, a.seconds, a.sample_rate, a.threads, a.repeats, a.ref_seconds, a.memory)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def probe(model: str, seconds: float, sr: int, threads: int, *, repeats: int = 5, ref_seconds: float | None = None,
          windowed_run: bool = False, window_s: float = 3.0, overlap: float = 0.5, batch: int = 8,
          memory: str = "default", timeout_s: float = 900) -> dict:
    """Run one length in a fresh interpreter (its own ru_maxrss) and return its JSON."""
    cmd = [sys.executable, "-m", "tools.bench.longrun", model, "--seconds", str(seconds), "--sample-rate", str(sr),
           "--threads", str(threads), "--repeats", str(repeats), "--memory", memory]
    if ref_seconds is not None:
        cmd += ["--ref-seconds", str(ref_seconds)]
    if windowed_run:
        cmd += ["--windowed", "--window-seconds", str(window_s), "--overlap", str(overlap), "--batch", str(batch)]
    # Linux carries ru_maxrss over exec: a child exec'd straight from this (torch-sized) process would
    # start at our peak. A shell that forks (not execs) the probe gives it a fresh, small high-water mark.
    shell = ["/bin/sh", "-c", f"{shlex.join(cmd)}; exit $?"]
    proc = subprocess.run(shell, capture_output=True, text=True, timeout=timeout_s,
                          cwd=Path(__file__).resolve().parents[2])
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
