"""Real recordings from ../shared/data through the whole decode -> resample -> model path.

Skipped (with the reason) when the data folder or a model is not there.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.conftest import Served, encode, require_clips, require_model

pytestmark = pytest.mark.anyio
KEYWORDS = ["alexa", "computer", "jarvis", "smart_mirror", "snowboy", "view_glass"]


async def test_keyword_clips_are_recognised(served: Served) -> None:
    clips = [(label, path) for label in KEYWORDS for path in require_clips("keywords", label, "*.flac", 2)]
    files = [("file", (path.name, path.read_bytes(), "audio/flac")) for _, path in clips]
    r = await served.client.post("/v1/classify/batch?top_k=1", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert all(x["status"] == 200 for x in results)
    correct = sum(x["result"]["predictions"][0]["label"] == label for x, (label, _) in zip(results, clips, strict=True))
    assert correct >= 0.75 * len(clips), f"{correct}/{len(clips)} keywords right: decode or resampling is off"


async def test_real_clip_survives_resampling_stereo_and_mp3(served: Served) -> None:
    [path] = require_clips("keywords", "jarvis", "*.flac", 1)
    x, sr = sf.read(path, dtype="float32")
    ref = (await served.client.post("/v1/classify?top_k=6", content=path.read_bytes(),
                                    headers={"content-type": "audio/flac"})).json()
    up = soxr.resample(x, sr, 44100)
    variants = {"wav44k-stereo": encode(np.stack([up, up], axis=1), 44100, "WAV", "PCM_16"),
                "mp3": encode(up, 44100, "MP3", "MPEG_LAYER_III")}
    for name, data in variants.items():
        body = (await served.client.post("/v1/classify?top_k=6", content=data,
                                         headers={"content-type": "audio/mpeg"})).json()
        assert body["predictions"][0]["label"] == ref["predictions"][0]["label"], name
        assert body["duration_s"] == pytest.approx(len(x) / sr, abs=0.06), name


async def test_digit_clips_on_the_keywords_model_are_upsampled(served: Served) -> None:
    [path] = require_clips("digits", "7", "*.wav", 1)
    r = await served.client.post("/v1/classify", content=path.read_bytes(), headers={"content-type": "audio/wav"})
    assert r.status_code == 200 and r.json()["sample_rate"] == 8000


async def test_digits_model_recognises_digits(served: Served) -> None:
    require_model("digits")
    clips = [(d, p) for d in map(str, range(10)) for p in require_clips("digits", d, "*.wav", 1)]
    files = [("file", (p.name, p.read_bytes(), "audio/wav")) for _, p in clips]
    r = await served.client.post("/v1/classify/batch?model=digits&top_k=1", files=files)
    models = (await served.client.get("/v1/models")).json()["models"]
    digits = next(m for m in models if m["name"] == "digits")
    assert digits["sample_rate"] == 8000 and digits["labels"] == [str(d) for d in range(10)]
    results = r.json()["results"]
    assert all(x["status"] == 200 for x in results), results
    correct = sum(x["result"]["predictions"][0]["label"] == d for x, (d, _) in zip(results, clips, strict=True))
    assert correct >= 5, f"{correct}/10 digits right"


async def test_a_long_recording_of_several_keywords_is_segmented(served: Served) -> None:
    """Keywords spliced with silence: a window within each keyword's clip should name it (windows may be
    shorter than a clip, so not every window over a clip holds its whole word)."""
    pieces, spans, t = [], [], 0.0
    for label in KEYWORDS:
        [path] = require_clips("keywords", label, "*.flac", 1)
        x, sr = sf.read(path, dtype="float32")
        gap = np.zeros(sr, np.float32)
        pieces += [x, gap]
        spans.append((label, t, t + len(x) / sr))
        t += (len(x) + len(gap)) / sr
    audio = np.concatenate(pieces)
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="FLAC")
    body = (await served.client.post("/v1/classify?top_k=1", content=buf.getvalue(),
                                     headers={"content-type": "audio/flac"})).json()
    assert body["windowing"]["windows"] == len(body["segments"]) > len(KEYWORDS)
    hits = 0
    for label, start, end in spans:
        inside = [s for s in body["segments"] if s["start_s"] >= start - 0.05 and s["end_s"] <= end + 0.05]
        hits += any(s["predictions"][0]["label"] == label for s in inside)
    assert hits >= 4, f"{hits}/6 keywords found in their windows"
