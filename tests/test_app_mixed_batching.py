"""Concurrent requests of different lengths share padded onnxruntime calls and get the answers they get alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    Served,
    metric_value,
    require_clips,
    require_model,
    serve,
    wav,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="building the tiny test model needs the onnx package")
    from tests.tiny_model import build

    folder = tmp_path_factory.mktemp("tiny")
    build(folder / "tiny.onnx")
    return folder


async def classify(s: Served, body: bytes, model: str) -> dict:
    r = await s.client.post(f"/v1/classify?model={model}&top_k=3&include_importance=true", content=body,
                            headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    return r.json()


def model_part(answer: dict) -> dict:
    """What the model decided (timings differ run to run)."""
    return {k: answer[k] for k in ("predictions", "frames", "importance", "duration_s")}


class MetricDelta:
    def __init__(self, s: Served, model: str) -> None:
        self.s, self.model, self.before = s, model, ""

    async def __aenter__(self) -> MetricDelta:
        self.before = (await self.s.client.get("/metrics")).text
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.after = (await self.s.client.get("/metrics")).text

    def __call__(self, name: str, **labels: str) -> float:
        return (metric_value(self.after, name, model=self.model, **labels)
                - metric_value(self.before, name, model=self.model, **labels))


async def test_mixed_lengths_share_one_padded_call_and_answer_as_alone(tiny_dir: Path) -> None:
    # 8 kHz model with 0.5 s windows: 0.46-0.5 s clips pad by < 10 %, 0.1 s is too short to join them.
    seconds = [0.46 + 0.005 * i for i in range(8)] + [0.1]
    bodies = [wav(x, 8000, freq=200 + 150 * i) for i, x in enumerate(seconds)]
    async with serve(model_dir=tiny_dir, default_model="tiny", batch_size=1) as s:
        alone = [await classify(s, b, "tiny") for b in bodies]  # unbatched: every call has one row
    async with serve(model_dir=tiny_dir, default_model="tiny", batch_size=8, batch_wait_ms=1000) as s:
        async with MetricDelta(s, "tiny") as delta:
            together = await asyncio.wait_for(asyncio.gather(*(classify(s, b, "tiny") for b in bodies)), 60)
    assert [model_part(a) for a in together] == [model_part(a) for a in alone]  # identical answers
    assert delta("diffres_batch_size_sum") == 9
    assert delta("diffres_batch_size_count") == 2  # the 8 near lengths in one call, the short clip alone
    assert delta("diffres_batch_size_bucket", le="6.0") == 1  # one call of 1, one of 8
    padding, samples = delta("diffres_batch_padding_samples_total"), delta("diffres_batch_samples_total")
    assert 0 < padding <= 0.1 * samples + 0.5 * 8000  # rows padded, within the bound (+ the short clip's grid step)


async def test_windows_of_long_audio_are_never_padded(tiny_dir: Path) -> None:
    async with serve(model_dir=tiny_dir, default_model="tiny", batch_size=4, batch_wait_ms=2) as s:
        async with MetricDelta(s, "tiny") as delta:
            answer = await classify(s, wav(6.0, 8000), "tiny")
    windows = answer["windowing"]["windows"]
    assert windows == 23 and delta("diffres_batch_size_sum") == windows
    assert delta("diffres_batch_padding_samples_total") == 0 and delta("diffres_batch_size_count") <= 6


async def test_real_clips_of_different_lengths_batched_equal_unbatched() -> None:
    require_model("keywords")
    clips = require_clips("keywords", "alexa", "*.flac", 6) + require_clips("keywords", "computer", "*.flac", 6)
    bodies = [p.read_bytes() for p in clips]
    async with serve(batch_size=1) as s:
        alone = [await s.client.post("/v1/classify?top_k=6", content=b, headers={"content-type": "audio/flac"})
                 for b in bodies]
    async with serve(batch_size=8, batch_wait_ms=200, batch_max_padding=0.3) as s:
        async with MetricDelta(s, "keywords") as delta:
            together = await asyncio.gather(*(s.client.post("/v1/classify?top_k=6", content=b,
                                                            headers={"content-type": "audio/flac"}) for b in bodies))
    assert delta("diffres_batch_size_count") < len(bodies)  # some clips shared a call
    assert delta("diffres_batch_padding_samples_total") > 0
    for a, t in zip(alone, together, strict=True):
        a, t = a.json(), t.json()
        assert a["frames"] == t["frames"] and a["duration_s"] == t["duration_s"]
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in t["predictions"]]
        np.testing.assert_allclose([p["score"] for p in t["predictions"]], [p["score"] for p in a["predictions"]],
                                   atol=1e-5)
