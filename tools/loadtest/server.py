"""Start `diffres serve` on 127.0.0.1 and a free port for a test, and always stop it again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(sid: int) -> list[int]:
    """Process ids in session `sid` (Linux /proc; empty elsewhere)."""
    pids = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def process_rss_mb(pid: int) -> float | None:
    """Resident memory of one process (Linux /proc; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class Server:
    """Context manager: the service in its own process group, ready on exit of __enter__."""

    command: tuple[str, ...] = ("diffres", "serve")  # what `python -m` runs

    def __init__(self, env: dict[str, str], log_path: Path, ready_timeout: float = 120,
                 cwd: Path | None = None, grpc: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "DIFFRES_HOST": "127.0.0.1", "DIFFRES_PORT": str(self.port)}
        # grpc: the OIP gRPC service on a free port too (`grpc_target` for clients); else off, whatever the
        # caller's environment says.
        self.grpc_port = free_port() if grpc else None
        self.grpc_target = f"127.0.0.1:{self.grpc_port}" if grpc else None
        self.env["DIFFRES_GRPC_PORT"] = str(self.grpc_port) if grpc else ""
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", *self.command], env=self.env, cwd=self.cwd, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until /readyz says ready; with worker processes (each answers for itself), until it says so 20
        times in a row."""
        deadline = time.monotonic() + self.ready_timeout
        streak = 0
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                json.loads(get(f"{self.url}/readyz", timeout=2))
                streak += 1
                if streak >= 20 or self.workers == 1:
                    return
                time.sleep(0.05)
            except (urllib.error.URLError, OSError, ValueError):
                streak = 0
                time.sleep(0.5)
        raise TimeoutError(f"server not ready after {self.ready_timeout:.0f} s; see {self.log_path}")

    @property
    def workers(self) -> int:
        """Server processes answering requests: DIFFRES_WORKERS as the server was started with it."""
        return int(self.env.get("DIFFRES_WORKERS") or 1)

    def processes(self) -> list[int]:
        """The server's processes: the one started and any it started (uvicorn workers), by session id."""
        if self.proc is None:
            return []
        return session_processes(self.proc.pid) or [self.proc.pid]

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server, all threads of all its processes (workers included; Linux
        /proc; None elsewhere). A worker that exited takes its CPU time with it: compare within one run."""
        if self.proc is None:
            return None
        total, found = 0, False
        for pid in self.processes():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
            found = True
        return total / os.sysconf("SC_CLK_TCK") if found else None

    def metrics_by_process(self, tries: int = 60) -> list[str]:
        """/metrics of every server process: worker processes each answer for themselves, so scrape (a new
        connection each time, which the kernel hands to any worker) until every worker has answered; a
        worker is told apart by its diffres_process_id."""
        found: dict[str, str] = {}
        for _ in range(tries):
            text = get(f"{self.url}/metrics").decode()
            pid = next((line for line in text.splitlines() if line.startswith("diffres_process_id")), "")
            found[pid] = text
            if len(found) >= self.workers:
                break
        return list(found.values())

    def rss_mb(self) -> float | None:
        """Resident memory of the server now, all its processes together (Linux /proc; None elsewhere)."""
        sizes = [rss for pid in self.processes() if (rss := process_rss_mb(pid)) is not None]
        return round(sum(sizes), 1) if sizes else None

    def stop(self) -> None:
        """SIGTERM (graceful drain), then SIGKILL if it is still there after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
