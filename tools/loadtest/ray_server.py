"""Start `python -m diffres.server.ray_main` (what `make serve-ray` runs) on 127.0.0.1 and free ports; always stop it.

The launcher runs in its own session, and Ray's processes (GCS, raylet, workers) are started inside
it, so after SIGTERM whatever is left of that session is found by session id and killed by pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tools.loadtest.server import Server, free_port, session_processes

ROOT = Path(__file__).resolve().parents[2]
CANNOT_START = "ray: cannot start a local cluster"  # printed by app.ray_main when Ray itself fails


class RayCannotStart(RuntimeError):
    """Ray could not start a local cluster on this machine (not a fault of the service)."""


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process left in session `sid`; the pids that were still there."""
    left = session_processes(sid)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


class RayServer(Server):
    """Context manager: the service on Ray Serve, ready on exit of __enter__, stopped on exit."""

    command = ("diffres.server.ray_main",)  # what `make serve-ray` runs

    def __init__(self, env: dict[str, str], log_path: Path, replicas: int = 2, ready_timeout: float = 240,
                 grpc: bool = False) -> None:
        self.metrics_port = free_port()
        super().__init__({**env, "DIFFRES_RAY_REPLICAS": str(replicas),
                          "DIFFRES_RAY_METRICS_PORT": str(self.metrics_port)}, log_path, ready_timeout, cwd=ROOT,
                         grpc=grpc)
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.stop_seconds: float | None = None
        self.leftovers: list[int] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            text = self.log()
            if self.proc.poll() is not None:
                tail = "\n".join(text.splitlines()[-15:])
                if CANNOT_START in text:
                    raise RayCannotStart(tail)
                raise RuntimeError(f"the Ray Serve launcher exited with {self.proc.returncode}:\n{tail}")
            if re.search(r"^ready: ", text, re.MULTILINE):
                return
            time.sleep(0.5)
        raise TimeoutError(f"Ray Serve not ready after {self.ready_timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 90) -> None:
        """SIGTERM (Serve drains, Ray shuts down), SIGKILL after `timeout`; then the session's leftovers."""
        if self.proc is None:
            return
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stop_seconds = time.monotonic() - started
        time.sleep(1)  # Ray's processes exit right after the launcher's ray.shutdown()
        self.leftovers = kill_session(self.proc.pid)
