"""Events in /v1/classify answers: the tiny model with a background label, in-process app over httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import tiny_model
from tests.conftest import Served, encode, serve
from tests.test_stream import SR, bursts

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def tiny(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    folder: Path = tmp_path_factory.mktemp("tiny-bg")
    tiny_model.build(folder / "tiny.onnx", background=True, min_score=0.55)
    async with serve(folder, default_model="tiny") as s:
        yield s


async def classify(s: Served, seconds: float, sounds: list[tuple[float, float]], query: str = "") -> dict:
    r = await s.client.post(f"/v1/classify?{query}", content=encode(bursts(seconds, sounds), SR),
                            headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    return r.json()


async def test_models_list_the_background_label_and_default_threshold(tiny: Served) -> None:
    [model] = (await tiny.client.get("/v1/models")).json()["models"]
    assert model["background_label"] == "_background_" and model["min_score"] == 0.55


async def test_a_long_recording_answers_with_its_events_and_what_was_detected(tiny: Served) -> None:
    body = await classify(tiny, 10.0, [(2.0, 2.25), (7.0, 7.5)], "top_k=2")
    # The first window touching each burst starts a hop (0.25 s) before it; the event ends half a hop before that
    # window's end (the tiny model fires on any window touching a burst, a real one once it holds the word).
    assert [(e["label"], e["start_s"], e["end_s"]) for e in body["events"]] == [
        ("mid", 1.75, 2.125), ("mid", 6.75, 7.125)]
    # Most windows are background, yet the clip-level answer says what was detected.
    assert body["predictions"][0]["label"] == "mid"
    assert body["predictions"][0]["score"] >= max(e["score"] for e in body["events"])  # events: windows that made them
    quiet = await classify(tiny, 10.0, [])
    assert quiet["events"] == [] and quiet["predictions"][0]["label"] == "_background_"


async def test_a_short_clip_has_events_too(tiny: Served) -> None:
    body = await classify(tiny, 0.5, [(0.1, 0.4)])
    assert "segments" not in body and [e["label"] for e in body["events"]] == ["mid"]
    assert (await classify(tiny, 0.5, []))["events"] == []


async def test_min_score_and_per_label_thresholds(tiny: Served) -> None:
    sounds = [(2.0, 2.25)]
    assert (await classify(tiny, 5.0, sounds, "min_score=0.95"))["events"] == []
    assert [e["label"] for e in (await classify(tiny, 5.0, sounds, "min_score=0.95&thresholds=mid:0.5"))["events"]] \
        == ["mid"]
    assert (await classify(tiny, 5.0, sounds, "thresholds=mid:0.99"))["events"] == []


@pytest.mark.parametrize("query", ["min_score=2", "thresholds=nope:0.5", "thresholds=mid", "thresholds=mid:x",
                                   "thresholds=_background_:0.3", "thresholds=mid:1.5"])
async def test_bad_thresholds_are_422(tiny: Served, query: str) -> None:
    r = await tiny.client.post(f"/v1/classify?{query}", content=encode(bursts(1.0, []), SR),
                               headers={"content-type": "audio/wav"})
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_parameters", "validation_error"), r.text
