"""The service under test: a real `diffres serve` process, plus what the suite reads about it.

Extends the load test's launcher (tools/loadtest/server.py) with a private TMPDIR (to count leaked
upload spools), open file descriptors and an RSS sampler thread.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from diffres.models import MODELS_DIR
from tools.loadtest.server import Server

ROOT = Path(__file__).resolve().parents[2]


class Service(Server):
    """`diffres serve` with `env` overrides, its own temp folder, and resource readings."""

    def __init__(self, work: Path, name: str, env: dict[str, str] | None = None, ready_timeout: float = 120) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{name}-tmp-", dir=work))
        settings = {"DIFFRES_MODEL_DIR": str(MODELS_DIR), "DIFFRES_LOG_LEVEL": "WARNING",
                    "TMPDIR": str(self.tmp), **(env or {})}
        super().__init__(settings, work / f"{name}.log", ready_timeout=ready_timeout, cwd=ROOT)
        self._peak = 0.0
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self._tmp_baseline: set[Path] = set()

    def _wait_ready(self) -> None:
        """Until /readyz is 200, or 503 'degraded' (loaded, with a failed model file: the corrupt-model case)."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log_path}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200 or (r.status_code == 503 and r.json()["error"]["code"] == "degraded"):
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {self.ready_timeout:.0f} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def fds(self) -> int | None:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None

    def temp_files(self) -> int:
        """Files in the server's TMPDIR beyond those it made while starting (upload spools left behind)."""
        return sum(1 for p in self.tmp.rglob("*") if p not in self._tmp_baseline)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start_sampling(self, every_s: float = 0.05) -> None:
        """Peak RSS from a sampler thread (ru_maxrss of a child is only known after it exits)."""
        self._peak = self.rss_mb() or 0.0
        self._sampling.set()

        def run() -> None:
            while self._sampling.is_set() and self.alive():
                self._peak = max(self._peak, self.rss_mb() or 0.0)
                time.sleep(every_s)

        self._sampler = threading.Thread(target=run, daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> float:
        """Peak RSS in MB since start_sampling."""
        self._sampling.clear()
        if self._sampler is not None:
            self._sampler.join(5)
        return round(self._peak, 1)

    def connect(self, timeout: float = 5) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def __enter__(self) -> Service:
        super().__enter__()
        self._tmp_baseline = set(self.tmp.rglob("*"))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._sampling.clear()
        super().__exit__(exc_type, exc, tb)
