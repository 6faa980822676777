"""Fixtures and helpers of the service tests (diffres.server): in-process app over httpx, synthetic audio."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from diffres.models import MODELS_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = MODELS_DIR
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
EXAMPLES = REPO_ROOT / "examples"  # the committed sample recordings (examples/README.md)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """App tests run on asyncio (the server's loop); async fixtures may be module-scoped."""
    return "asyncio"


def require_model(name: str) -> Path:
    path = MODEL_DIR / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path.relative_to(REPO_ROOT)} is missing: ship the exported model in models/ to run this test")
    return path


def require_clips(dataset: str, label: str, pattern: str, count: int) -> list[Path]:
    folder = DATA_DIR / dataset / label
    clips = sorted(folder.glob(pattern))[:count]
    if not clips:
        pytest.skip(f"no real clips at {folder} (../shared/data beside the repository): real-audio test skipped")
    return clips


def tone(seconds: float, sr: int, channels: int = 1, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """A sine with a little deterministic noise: stable, but not degenerate, input for the model."""
    t = np.arange(round(seconds * sr)) / sr
    rng = np.random.default_rng(int(freq))
    x = (amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def encode(x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav(seconds: float = 1.0, sr: int = 16000, **kwargs: Any) -> bytes:
    subtype = kwargs.pop("subtype", "PCM_16")
    return encode(tone(seconds, sr, **kwargs), sr, "WAV", subtype)


def without_timing(answer: Any) -> Any:
    """An answer (a result object or its JSON) with every `timing_ms` left out: the rest must match exactly."""
    if hasattr(answer, "to_json"):
        answer = answer.to_json()
    if isinstance(answer, dict):
        return {k: without_timing(v) for k, v in answer.items() if k != "timing_ms"}
    if isinstance(answer, list):
        return [without_timing(v) for v in answer]
    return answer


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


@dataclass
class Served:
    """An app running in this event loop, and an httpx client talking to it over ASGI."""

    app: Any
    client: httpx.AsyncClient


@asynccontextmanager
async def serve(model_dir: Path = MODEL_DIR, ready: bool = True, **overrides: Any) -> AsyncIterator[Served]:
    """create_app with `overrides` as settings, lifespan run, optionally waiting for warm-up."""
    from diffres.server.app import create_app
    from diffres.server.config import Settings

    app = create_app(Settings(model_dir=model_dir, **overrides))
    async with app.router.lifespan_context(app):
        if ready:
            assert await app.state.registry.wait_ready(120), f"not ready: {app.state.registry.status}"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test", timeout=120) as client:
            yield Served(app, client)


# Small limits so the limit paths are cheap to exercise.
TEST_LIMITS = {"max_upload_bytes": 4 * 1024 * 1024, "max_json_bytes": 2 * 1024 * 1024, "max_duration_s": 600.0}


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[Served]:
    """The keywords model (and digits, when shipped) behind one app per test module."""
    require_model("keywords")
    async with serve(**TEST_LIMITS) as s:
        yield s


@pytest.fixture
def client(served: Served) -> httpx.AsyncClient:
    return served.client
