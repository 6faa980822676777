"""The API option the demo page draws from: include_spectrogram (log-mel, importance, merged frames)."""

from __future__ import annotations

import numpy as np
import pytest

from diffres.merge import boundaries, merged_logmel
from tests.conftest import Served, require_clips, wav

pytestmark = pytest.mark.anyio


def test_merged_frames_match_the_models_warp() -> None:
    """diffres/merge.py (numpy, for the service) is the model's averaged channel (train/diffres.py, torch)."""
    torch = pytest.importorskip("torch", reason="the model's warp needs torch")
    from diffres.contract import delta_fraction, frames_out
    from diffres.train.diffres import EPS, normalize_scores, warp_average, warp_weights

    rng = np.random.default_rng(0)
    for n_in, delta in [(7, 0.5), (164, 0.5), (311, 0.75), (40, 0.25)]:
        t = frames_out(n_in, delta_fraction(delta))
        scores = normalize_scores(torch.tensor(rng.uniform(0.01, 0.99, (1, n_in))), t)
        logmel = torch.tensor(rng.normal(-5, 3, (1, n_in, 16)), dtype=torch.float32)
        expected = torch.log(warp_average(logmel.exp(), warp_weights(scores, t)).clamp_min(0) + EPS)[0].numpy()
        got = merged_logmel(logmel[0].numpy(), scores[0].numpy())
        assert got.shape == (t, 16)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        edges = boundaries(scores[0].numpy())
        assert len(edges) == t + 1 and edges[0] == 0 and abs(edges[-1] - n_in) < 1e-9
        assert np.all(np.diff(edges) > 0)


def test_boundaries_of_uniform_importance_are_evenly_spaced() -> None:
    edges = boundaries(np.full(10, 0.5))  # 10 frames merged pairwise into 5
    np.testing.assert_allclose(edges, [0, 2, 4, 6, 8, 10])


async def test_spectrogram_of_a_real_clip(served: Served) -> None:
    [clip] = require_clips("keywords", "jarvis", "*.flac", 1)
    r = await served.client.post("/v1/classify?include_spectrogram=true", content=clip.read_bytes(),
                                 headers={"content-type": "audio/flac"})
    assert r.status_code == 200, r.text
    body = r.json()
    spec, frames = body["spectrogram"], body["frames"]
    model = (await served.client.get("/v1/models")).json()["models"]
    n_mels = next(m["n_mels"] for m in model if m["name"] == body["model"])
    assert len(spec["logmel"]) == len(spec["importance"]) == frames["input"]
    assert {len(row) for row in spec["logmel"]} == {n_mels} == {len(row) for row in spec["merged"]}
    assert len(spec["merged"]) == frames["output"] and len(spec["boundaries"]) == frames["output"] + 1
    assert spec["hop_s"] == pytest.approx(0.01)
    importance = np.array(spec["importance"])
    assert importance.max() <= 1 + 1e-4 and importance.sum() == pytest.approx(frames["output"], abs=1e-2)
    assert spec["boundaries"][0] == 0 and spec["boundaries"][-1] == pytest.approx(frames["input"])
    # The merged frames are what the returned log-mel and importance give (to the response's rounding).
    np.testing.assert_allclose(spec["merged"], merged_logmel(np.array(spec["logmel"]), importance), atol=0.02)


async def test_off_by_default_and_documented(served: Served) -> None:
    r = await served.client.post("/v1/classify", content=wav(1.0), headers={"content-type": "audio/wav"})
    assert r.status_code == 200 and "spectrogram" not in r.json()
    spec = (await served.client.get("/openapi.json")).json()
    params = {p["name"] for p in spec["paths"]["/v1/classify"]["post"]["parameters"]}
    assert "include_spectrogram" in params and "Spectrogram" in spec["components"]["schemas"]


async def test_windowed_audio_says_why_there_is_no_spectrogram(served: Served) -> None:
    model = next(m for m in (await served.client.get("/v1/models")).json()["models"] if m["default"])
    r = await served.client.post("/v1/classify?include_spectrogram=true&include_importance=true",
                                 content=wav(model["long_audio_s"] + 2), headers={"content-type": "audio/wav"})
    body = r.json()
    assert r.status_code == 200 and body["segments"] and "spectrogram" not in body
    assert any("no spectrogram" in w for w in body["warnings"]) and body["importance"]
