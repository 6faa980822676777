"""`python -m tools.loadtest.reload`: what changing a model without a restart costs, measured on a real server.

Starts `diffres serve` (tools.loadtest.server: 127.0.0.1, a free port, always stopped) on a temporary
repository holding the shipped models in Triton's layout, with repository control on loopback
(DIFFRES_ADMIN_LOOPBACK), and measures over HTTP:
- reload time: a new version of the model (a copy under the next number, moved in whole) then
  `POST /v2/repository/models/{model}/load`, answered once it serves: load, contract check, probe
  inference, warm-up and swap; --reloads times (median, p90, max);
- memory: --cycles unload/load cycles, the server's RSS after each; the criterion: RSS after the last
  cycle within --rss-tolerance (10%) of its level after the first (sessions really released);
- with --clients N: N threads classify during the reloads, and every answer must be a 200 naming its
  version.
Prints the summary; with --report writes reports/reload.json and reports/RELOAD.md. Exit 1 when a
criterion is missed. The machine's load average is recorded: figures from a busy machine are noise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from diffres.models import MODELS_DIR
from tools.loadtest.server import Server

ROOT = Path(__file__).resolve().parents[2]


def wav_bytes(seconds: float, rate: int) -> bytes:
    """A quiet tone with a little noise, as WAV: a real request's work, deterministic."""
    t = np.arange(round(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def add_version(repo: Path, model: str, version: int) -> None:
    """MODEL/N/model.onnx from the shipped file, built beside and renamed in (never half a file)."""
    staging = Path(tempfile.mkdtemp(dir=repo / model, prefix=f".{version}-"))
    shutil.copyfile(MODELS_DIR / f"{model}.onnx", staging / "model.onnx")
    staging.rename(repo / model / str(version))


def make_repo(root: Path, model: str) -> Path:
    repo = root / "models"
    (repo / model).mkdir(parents=True)
    add_version(repo, model, 1)
    return repo


class Storm:
    """Client threads classifying a short clip while reloads run; every answer recorded."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.stop = url, threading.Event()
        self.answers = 0
        self.errors: list[str] = []
        self.versions: set[int] = set()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        body = wav_bytes(1.0, 16000)
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while not self.stop.is_set():
                try:
                    r = http.post("/v1/classify", content=body, headers={"content-type": "audio/wav"})
                    if r.status_code == 200 and "repository_version" in r.json():
                        self.answers += 1
                        self.versions.add(r.json()["repository_version"])
                    else:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Storm:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(120)


def post(http: httpx.Client, path: str) -> float:
    """Seconds until the server answered 200."""
    started = time.perf_counter()
    r = http.post(path)
    if r.status_code != 200:
        raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")
    return time.perf_counter() - started


def reload_times(server: Server, repo: Path, model: str, reloads: int) -> list[float]:
    """Seconds per reload, each to a new version."""
    with httpx.Client(base_url=server.url, timeout=300) as http:
        times = []
        for version in range(2, reloads + 2):
            add_version(repo, model, version)
            times.append(post(http, f"/v2/repository/models/{model}/load"))
        return times


def rss_cycles(server: Server, model: str, cycles: int) -> list[float | None]:
    """The server's RSS (MB) after each unload/load cycle (unload answers once the session is released)."""
    rss = []
    with httpx.Client(base_url=server.url, timeout=300) as http:
        for _ in range(cycles):
            post(http, f"/v2/repository/models/{model}/unload")
            post(http, f"/v2/repository/models/{model}/load")
            rss.append(server.rss_mb())
    return rss


def summarize(raw: dict[str, Any], args: argparse.Namespace, storm: Storm | None,
              load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict[str, Any]:
    times = sorted(raw["reload_s"])
    rss = [r for r in raw["rss_mb"] if r is not None]
    growth = (rss[-1] - rss[0]) / rss[0] if len(rss) >= 2 else None
    cpus = os.cpu_count() or 1
    return {
        "model": args.model, "reloads": len(times), "cycles": args.cycles, "clients": args.clients,
        "reload_s": {"median": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))],
                     "max": times[-1], "all": [round(t, 4) for t in raw["reload_s"]]} if times else None,
        "rss_mb": {"after_first": rss[0] if rss else None, "after_last": rss[-1] if rss else None,
                   "min": min(rss, default=None), "max": max(rss, default=None), "growth": growth,
                   "all": rss},
        "storm": None if storm is None else {"answers": storm.answers, "errors": len(storm.errors),
                                             "first_errors": storm.errors[:5], "versions": sorted(storm.versions)},
        "machine": {"cpus": cpus, "loadavg_before": load_before, "loadavg_after": load_after,
                    "busy": max(load_before[0], load_after[0]) > 0.5 * cpus},
    }


def problems(summary: dict[str, Any], tolerance: float) -> list[str]:
    found = []
    growth = summary["rss_mb"]["growth"]
    if growth is None:
        found.append("RSS could not be read (Linux /proc only)")
    elif growth > tolerance:
        found.append(f"RSS grew {growth:.1%} from the first cycle to the last (tolerance {tolerance:.0%})")
    if summary["storm"] is not None and summary["storm"]["errors"]:
        found.append(f"{summary['storm']['errors']} classify requests failed during reloads")
    return found


def markdown(summary: dict[str, Any], found: list[str]) -> str:
    r, m, machine = summary["reload_s"], summary["rss_mb"], summary["machine"]
    lines = [
        "# Model reloads", "",
        "`python -m tools.loadtest.reload --report` (tools/loadtest/reload.py): a real `diffres serve` on a "
        "temporary repository, the shipped model in Triton's layout, repository control on loopback.", "",
        f"Machine: {machine['cpus']} CPUs, load average {machine['loadavg_before'][0]:.2f} before, "
        f"{machine['loadavg_after'][0]:.2f} after" + (" (busy: these figures are noisy)" if machine["busy"] else "")
        + ".", "",
        f"## Reload time of `{summary['model']}`", "",
        "A new version dropped into the repository, then `POST /v2/repository/models/"
        f"{summary['model']}/load`, answered once it serves (load, contract check, probe inference, warm-up, swap).", "",
        "| reloads | median | p90 | max |", "|---|---|---|---|",
        f"| {summary['reloads']} | {r['median']:.3f} s | {r['p90']:.3f} s | {r['max']:.3f} s |", "",
        "## Memory over load/unload cycles", "",
        f"{summary['cycles']} cycles of unload then load; the server's RSS after each.", "",
        "| after the first | after the last | min | max | growth |", "|---|---|---|---|---|",
        f"| {m['after_first']} MB | {m['after_last']} MB | {m['min']} MB | {m['max']} MB | "
        f"{m['growth']:+.1%} |" if m["growth"] is not None else "| - | - | - | - | - |", "",
    ]
    if summary["storm"] is not None:
        s = summary["storm"]
        lines += ["## Under load", "", f"{summary['clients']} clients classifying during the reloads: {s['answers']} answers, "
                  f"{s['errors']} errors, versions seen {s['versions']}.", ""]
    lines += ["## Verdict", "", "; ".join(found) if found else "Every criterion met.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.loadtest.reload", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="keywords", help="shipped model to reload (default keywords)")
    p.add_argument("--reloads", type=int, default=10, help="reloads timed, each a new version (default 10)")
    p.add_argument("--cycles", type=int, default=20, help="unload/load cycles for the RSS check (default 20)")
    p.add_argument("--clients", type=int, default=0, help="threads classifying meanwhile (default 0)")
    p.add_argument("--rss-tolerance", type=float, default=0.10, help="RSS growth allowed, first to last cycle")
    p.add_argument("--report", action="store_true", help="write reports/reload.json and reports/RELOAD.md")
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    args = p.parse_args(argv)
    if args.reloads < 1 or args.cycles < 2:
        p.error("--reloads must be >= 1 and --cycles >= 2")
    with tempfile.TemporaryDirectory(prefix="diffres-reload-") as tmp:
        repo = make_repo(Path(tmp), args.model)
        env = {"DIFFRES_MODEL_DIR": str(repo), "DIFFRES_ADMIN_LOOPBACK": "true", "DIFFRES_DEFAULT_MODEL": args.model,
               "DIFFRES_LOG_LEVEL": "WARNING"}
        load_before = os.getloadavg()
        with Server(env, Path(tmp) / "server.log", ready_timeout=180) as server:
            storm = Storm(server.url, args.clients) if args.clients else None
            if storm is not None:  # requests during reloads; none while the model is unloaded on purpose
                with storm:
                    times = reload_times(server, repo, args.model, args.reloads)
            else:
                times = reload_times(server, repo, args.model, args.reloads)
            raw = {"reload_s": times, "rss_mb": rss_cycles(server, args.model, args.cycles)}
        summary = summarize(raw, args, storm, load_before, os.getloadavg())
    found = problems(summary, args.rss_tolerance)
    print(json.dumps({k: v for k, v in summary.items() if k != "storm"} | {"storm": summary["storm"]}, indent=1))
    print("; ".join(found) if found else "every criterion met", file=sys.stderr)
    if args.report:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reload.json").write_text(json.dumps(summary, indent=1) + "\n")
        (args.out / "RELOAD.md").write_text(markdown(summary, found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
