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
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                json.loads(get(f"{self.url}/readyz", timeout=2))
                return
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.5)
        raise TimeoutError(f"server not ready after {self.ready_timeout:.0f} s; see {self.log_path}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process, all threads (Linux /proc; None elsewhere)."""
        try:
            assert self.proc is not None
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AssertionError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float | None:
        """Resident memory of the server process now (Linux /proc; None elsewhere)."""
        try:
            assert self.proc is not None
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except (OSError, AssertionError):
            pass
        return None

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
