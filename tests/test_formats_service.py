"""Recorded formats through the service: a WebM, an M4A and an ADTS AAC made from a real clip get the
same top label as the WAV of that clip; AMR likewise on the 8 kHz digits model; and the upload
leaves no temporary file behind, whatever the outcome.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from diffres.decode import load_audio
from tests.av_encode import TARGETS, encode
from tests.conftest import Served, require_clips, require_model
from tests.conftest import encode as encode_sf

pytestmark = pytest.mark.anyio
pytest.importorskip("av", reason="PyAV (the 'av' package) is not installed: the fallback decoder cannot run")
KEYWORD_CLIPS = [("jarvis", 0), ("computer", 0), ("snowboy", 0)]


async def top_label(served: Served, data: bytes, model: str) -> tuple[str, str]:
    r = await served.client.post(f"/v1/classify?model={model}&top_k=1", files={"file": ("clip", data)})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["predictions"][0]["label"], body["format"]


@pytest.mark.parametrize("label,index", KEYWORD_CLIPS)
async def test_browser_and_phone_recordings_get_the_wavs_label(served: Served, label: str, index: int) -> None:
    path = require_clips("keywords", label, "*.flac", index + 1)[index]
    x = load_audio(path, 16000)
    expected, fmt = await top_label(served, encode_sf(x, 16000), "keywords")
    assert fmt == "WAV/PCM_16"
    for name, container in [("webm", "WEBM/OPUS"), ("m4a", "MP4/AAC"), ("adts", "ADTS/AAC"), ("mp4-video", "MP4/AAC")]:
        got, fmt = await top_label(served, encode(x, 16000, TARGETS[name]), "keywords")
        assert (got, fmt) == (expected, container), name


async def test_amr_voice_memo_gets_the_wavs_label_on_the_8khz_model(served: Served) -> None:
    require_model("digits")
    for path in require_clips("digits", "7", "*.wav", 2):
        x = load_audio(path, 8000)
        expected, _ = await top_label(served, encode_sf(x, 8000), "digits")
        got, fmt = await top_label(served, encode(x, 8000, TARGETS["amr"]), "digits")
        assert (got, fmt) == (expected, "AMR/AMRNB")


async def test_batch_reports_each_files_own_format_error(served: Served) -> None:
    t = np.arange(16000) / 16000
    webm = encode((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, TARGETS["webm"])
    r = await served.client.post("/v1/classify/batch", files=[
        ("file", ("ok.webm", webm)), ("file", ("cut.m4a", encode(t.astype(np.float32), 16000, TARGETS["m4a"])[:900]))])
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 400]
    assert results[0]["result"]["format"] == "WEBM/OPUS" and results[1]["error"]["code"] == "invalid_audio"


async def test_uploads_leave_no_temporary_files(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """Bodies over 1 MiB spool to disk; the decoders write nothing; every file is gone afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    t = np.arange(20 * 16000) / 16000
    big = encode((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, TARGETS["mkv-float"])
    assert len(big) > 1024 * 1024
    ok = await served.client.post("/v1/classify", content=big, headers={"content-type": "audio/webm"})
    cut = await served.client.post("/v1/classify", files={"file": ("cut.mkv", big[: len(big) // 3 * 2])})
    assert ok.status_code == 200 and ok.json()["format"] == "MATROSKA/PCM_F32LE"
    assert cut.status_code == 400 and cut.json()["error"]["code"] in ("truncated_audio", "invalid_audio")
    assert list(tmp_path.iterdir()) == []
