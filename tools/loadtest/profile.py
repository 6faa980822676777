"""A sampling profile of the server under load: py-spy (`--nonblocking`) on the server process, summarised.

`python -m tools.loadtest` runs it during a short extra locust phase (not one of the measured rounds: the
sampler takes CPU of its own). py-spy records raw collapsed stacks (`frame;frame;... count`, one line per
distinct stack, each frame `function (file:line)`); `summarise` turns them into shares of the samples:

- by leaf frame (self time): what the CPUs were actually running, Python frames only (time inside
  onnxruntime's C++ is the Python frame that called it: `InferenceSession.run`);
- by owner of the leaf frame: onnxruntime, this project's code (diffres/), and each library;
- inclusive shares of a few stages of a request (multipart, decoding, serialising, logging, metrics).

Idle threads (waiting on a lock, a queue or epoll) are not sampled (py-spy leaves them out by default).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Owner of a frame by the start of its file path (py-spy prints paths relative to site-packages).
OWNERS = (
    ("onnxruntime/", "onnxruntime"),
    ("diffres/", "diffres (own code)"),
    ("tools/", "diffres (own code)"),
    ("soundfile", "soundfile (libsndfile)"),
    ("soxr/", "soxr"),
    ("numpy/", "numpy"),
    ("uvicorn/", "uvicorn"),
    ("httptools/", "httptools"),
    ("h11/", "h11"),
    ("starlette/", "starlette"),
    ("fastapi/", "fastapi"),
    ("pydantic", "pydantic"),
    ("python_multipart/", "python-multipart"),
    ("multipart/", "python-multipart"),
    ("anyio/", "anyio"),
    ("prometheus_client/", "prometheus_client"),
    ("uvloop/", "uvloop"),
    ("asyncio/", "asyncio"),
    ("concurrent/", "threads (concurrent.futures)"),
    ("threading", "threads (concurrent.futures)"),
    ("queue", "threads (concurrent.futures)"),
    ("logging/", "logging"),
    ("json/", "json"),
    ("tempfile", "tempfile"),
    ("uuid", "uuid"),
)

# Inclusive stages: a sample counts for a stage when any frame of its stack matches (function, file start).
STAGES = {
    "session call (onnxruntime)": [("run", "onnxruntime/")],
    "receive body (multipart / raw)": [("receive_body", "diffres/server/uploads"), ("_read_multipart", "diffres/"),
                                       ("_read_raw", "diffres/")],
    "open + header check": [("open", "diffres/pipeline"), ("open_audio", "diffres/decode")],
    "decode + resample (AudioStream.read)": [("AudioStream.read", "diffres/decode"), ("read", "diffres/decode")],
    "answer (Answer.add, _result)": [("Answer.add", "diffres/pipeline"), ("Pipeline._result", "diffres/pipeline"),
                                     ("add", "diffres/pipeline"), ("_result", "diffres/pipeline")],
    "response serialisation": [("serialize_response", "fastapi/"), ("json_body", "diffres/server/responses"),
                               ("render", "starlette/responses")],
    "batcher (event loop side)": [("MicroBatcher", "diffres/server/batching")],
    "access log": [("record_access", "diffres/server/middleware"), ("Logger", "logging/"),
                   ("_log", "logging/"), ("emit", "logging/")],
    "metrics": [("observe", "prometheus_client/"), ("inc", "prometheus_client/"), ("labels", "prometheus_client/")],
}


def parse(lines: Iterable[str]) -> list[tuple[list[tuple[str, str]], int]]:
    """Raw py-spy output -> [(frames root first as (function, file), samples)]."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part)
            frames.append((m.group("func"), m.group("file")) if m else (part, ""))
        stacks.append((frames, int(count)))
    return stacks


def owner(file: str) -> str:
    for prefix, name in OWNERS:
        if file.startswith(prefix) or f"/{prefix}" in file:
            return name
    return "python (stdlib, other)" if file else "other"


def _matches(frames: list[tuple[str, str]], rules: list[tuple[str, str]]) -> bool:
    return any((func == name or func.endswith("." + name) or func.startswith(name + ".")) and path in file
               for func, file in frames for name, path in rules)


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """Shares of the samples by leaf frame, by the leaf's owner, and by stage (inclusive)."""
    stacks = parse(raw.splitlines())
    total = sum(n for _, n in stacks)
    if not total:
        return {"samples": 0}
    leaves: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for frames, n in stacks:
        func, file = frames[-1]
        leaves[f"{func} ({file})"] += n
        owners[owner(file)] += n
        for stage, rules in STAGES.items():
            if _matches(frames, rules):
                stages[stage] += n

    def shares(counter: Counter[str], k: int | None = None) -> list[list[Any]]:
        return [[name, round(n / total, 4)] for name, n in counter.most_common(k)]

    return {"samples": total, "top_leaf_frames": shares(leaves, top), "by_owner": shares(owners),
            "stages": [[s, round(stages[s] / total, 4)] for s in STAGES]}


class Sampler:
    """`py-spy record --nonblocking` on one process (and its children: worker processes) for `seconds`, raw
    output to `out`. `gil`: only the thread holding the GIL (the Python work: onnxruntime, libsndfile and the
    other native code that releases it drop out)."""

    def __init__(self, pid: int, out: Path, seconds: float, rate: int = 100, *, gil: bool = False,
                 subprocesses: bool = False) -> None:
        self.out = out
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.cmd = [exe, "record", "--nonblocking", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r",
                    str(rate), "-f", "raw", "-o", str(out), *(["--gil"] if gil else []),
                    *(["--subprocesses"] if subprocesses else [])]
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists())

    def start(self) -> Sampler:
        self.out.unlink(missing_ok=True)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        return self

    def stop(self) -> None:
        """End it now (an interrupted run): SIGINT, then SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait(self, timeout: float = 60) -> str:
        """The raw profile ('' when py-spy could not attach: no permission to ptrace, for instance)."""
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            _, err = self.proc.communicate(timeout=30)
        if not self.out.exists():
            print(f"py-spy wrote no profile: {err.decode(errors='replace').strip()[-300:]}", file=sys.stderr)
            return ""
        return self.out.read_text()


def markdown(summary: dict[str, Any], title: str = "Profile") -> list[str]:
    """The summary as report lines (empty without samples)."""
    if not summary.get("samples"):
        return []
    lines = [f"{title}: {summary['samples']}.", "", "| leaf frame (self time) | share |", "|---|---|"]
    lines += [f"| `{name}` | {share:.1%} |" for name, share in summary["top_leaf_frames"]]
    lines += ["", "| owner of the leaf frame | share |", "|---|---|"]
    lines += [f"| {name} | {share:.1%} |" for name, share in summary["by_owner"]]
    lines += ["", "| stage (inclusive) | share |", "|---|---|"]
    lines += [f"| {name} | {share:.1%} |" for name, share in summary["stages"]]
    return lines


if __name__ == "__main__":  # summarise a saved raw profile: python -m tools.loadtest.profile FILE
    import json

    print(json.dumps(summarise(Path(sys.argv[1]).read_text()), indent=1))
