"""Bad-input corpus: every case gets its exact status and error body, and the server stays up.

Some entries are odd but valid audio (192 kHz, 8-bit, 24-bit, 6 channels): those must succeed.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from tests.av_encode import TARGETS, Target
from tests.av_encode import encode as encode_av
from tests.conftest import TEST_LIMITS, Served, encode, tone, wav

pytestmark = pytest.mark.anyio
WAV_TYPE = {"content-type": "audio/wav"}


def float_wav_with(value: float) -> bytes:
    x = tone(0.5, 16000)
    x[1234] = value
    return encode(x, 16000, subtype="FLOAT")


def header_claims_hours() -> bytes:
    """A PCM WAV whose RIFF and data sizes say ~37 hours, followed by 0.1 s of samples."""
    data = bytearray(wav(0.1))
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)
    data[40:44] = struct.pack("<I", 0xFFFFFF00)
    return bytes(data)


def streamed_flac(seconds: float, sr: int = 16000) -> bytes:
    """A valid FLAC whose STREAMINFO says "total samples unknown", as streaming encoders write it."""
    data = bytearray(encode(tone(seconds, sr), sr, "FLAC"))
    data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def nan_matroska() -> bytes:
    x = tone(0.5, 16000)
    x[321] = np.nan
    return encode_av(x, 16000, TARGETS["mkv-float"])


# Browser-style WebM (no duration in the header) of PCM at 1 kHz: 10 s past the limit, small upload.
LIVE_PCM = Target("live-pcm", "matroska", "pcm_s16le", 1000, {"live": "1"})
HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"


def half(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length: the limit must trip while streaming."""
    for i in range(0, len(data), 256 * 1024):
        yield data[i:i + 256 * 1024]


@dataclass
class Case:
    name: str
    status: int
    code: str | None  # None: success
    content: Any = None
    headers: dict[str, str] = field(default_factory=lambda: dict(WAV_TYPE))
    files: Any = None
    data: Any = None
    query: str = ""


OVER_LIMIT = TEST_LIMITS["max_upload_bytes"] + 1024 * 1024
CASES = [
    Case("empty body", 400, "empty_audio", content=b""),
    Case("random bytes", 400, "invalid_audio", content=np.random.default_rng(1).bytes(20000)),
    Case("truncated wav", 400, "truncated_audio", content=half(wav(2.0))),
    Case("truncated flac", 400, "invalid_audio", content=half(encode(tone(2.0, 16000), 16000, "FLAC"))),
    Case("truncated ogg", 400, "truncated_audio", content=half(encode(tone(2.0, 16000), 16000, "OGG", "VORBIS"))),
    Case("ogg cut at 80%", 400, "truncated_audio",
         content=half(encode(tone(2.0, 16000), 16000, "OGG", "VORBIS"), 0.8)),
    Case("flac cut at 90%", 400, "invalid_audio", content=half(encode(tone(2.0, 16000), 16000, "FLAC"), 0.9)),
    Case("truncated mp3", 400, "truncated_audio",
         content=half(encode(tone(2.0, 16000), 16000, "MP3", "MPEG_LAYER_III"))),
    Case("text file named .wav", 400, "invalid_audio", headers={},
         files={"file": ("notes.wav", b"this is a text file, not audio\n" * 40, "audio/wav")}),
    Case("zero samples", 400, "empty_audio", content=encode(np.zeros(0, np.float32), 16000)),
    Case("empty file part", 400, "empty_audio", headers={}, files={"file": ("e.wav", b"", "audio/wav")}),
    Case("NaN float wav", 400, "non_finite_audio", content=float_wav_with(np.nan)),
    Case("Inf float wav", 400, "non_finite_audio", content=float_wav_with(-np.inf)),
    Case("one sample", 400, "audio_too_short", content=encode(np.full(1, 0.1, np.float32), 16000)),
    Case("header claims hours", 400, "truncated_audio", content=header_claims_hours()),
    Case("sample rate 500 Hz", 400, "unsupported_sample_rate", content=encode(tone(1.0, 500), 500)),
    Case("192 kHz", 200, None, content=wav(1.0, sr=192000)),
    Case("8-bit", 200, None, content=wav(1.0, subtype="PCM_U8")),
    Case("24-bit", 200, None, content=wav(1.0, subtype="PCM_24")),
    Case("32-bit int", 200, None, content=wav(1.0, subtype="PCM_32")),
    Case("6 channels", 200, None, content=wav(1.0, sr=48000, channels=6)),
    Case("wrong field name", 422, "invalid_parameters", headers={}, files={"audio": ("a.wav", wav(1.0), "audio/wav")}),
    Case("file sent as text field", 422, "invalid_parameters", headers={}, data={"file": "clip.wav"},
         files={"other": ("x.txt", b"x", "text/plain")}),
    Case("two files to /v1/classify", 422, "invalid_parameters", headers={},
         files=[("file", ("a.wav", wav(1.0))), ("file", ("b.wav", wav(1.0)))]),
    Case("unknown model", 404, "model_not_found", content=wav(1.0), query="?model=no_such_model"),
    Case("model name too long", 422, "invalid_parameters", content=wav(1.0), query="?model=" + "m" * 101),
    Case("top_k 0", 422, "invalid_parameters", content=wav(1.0), query="?top_k=0"),
    Case("top_k -1", 422, "invalid_parameters", content=wav(1.0), query="?top_k=-1"),
    Case("top_k huge", 422, "invalid_parameters", content=wav(1.0), query="?top_k=99999999999999999999"),
    Case("top_k not a number", 422, "invalid_parameters", content=wav(1.0), query="?top_k=five"),
    Case("include_importance maybe", 422, "invalid_parameters", content=wav(1.0), query="?include_importance=maybe"),
    Case("upload over the limit", 413, "payload_too_large", content=b"\0" * OVER_LIMIT),
    Case("chunked upload over the limit", 413, "payload_too_large", content="chunked"),
    Case("audio longer than max duration", 413, "audio_too_long",
         content=encode(np.zeros(int(TEST_LIMITS["max_duration_s"] + 1) * 1000, np.float32), 1000)),
    Case("streamed flac, length unknown", 200, None, content=streamed_flac(1.0)),  # was 413 "576460752303423.5 s"
    Case("streamed flac over max duration", 413, "audio_too_long",
         content=streamed_flac(TEST_LIMITS["max_duration_s"] + 10, 1000)),
    Case("webm without duration over max duration", 413, "audio_too_long", headers={"content-type": "audio/webm"},
         content=encode_av(tone(TEST_LIMITS["max_duration_s"] + 10, 1000), 1000, LIVE_PCM)),
    Case("webm/opus", 200, None, content=encode_av(tone(1.0, 16000), 16000, TARGETS["webm"])),
    Case("m4a cut off", 400, "invalid_audio", content=half(encode_av(tone(1.0, 16000), 16000, TARGETS["m4a"]))),
    Case("adts cut off", 400, "invalid_audio", content=half(encode_av(tone(1.0, 16000), 16000, TARGETS["adts"]), 0.3)),
    Case("NaN in a matroska float stream", 400, "non_finite_audio", content=nan_matroska()),
    Case("hls playlist", 400, "invalid_audio", content=HLS),
    Case("text/plain body", 415, "unsupported_media_type", content=wav(1.0), headers={"content-type": "text/plain"}),
    Case("json body", 415, "unsupported_media_type", content=b'{"audio": "x"}',
         headers={"content-type": "application/json"}),
    Case("no content type", 415, "unsupported_media_type", content=wav(1.0), headers={}),
    Case("multipart without boundary", 400, "invalid_multipart", content=b"--x\r\n",
         headers={"content-type": "multipart/form-data"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_input(served: Served, case: Case) -> None:
    content = chunked(b"\0" * OVER_LIMIT) if case.content == "chunked" else case.content
    r = await served.client.post("/v1/classify" + case.query, content=content, headers=case.headers,
                                 files=case.files, data=case.data)
    assert r.status_code == case.status, r.text
    body = r.json()
    if case.code is None:
        assert body["predictions"] and body["frames"]["input"] > 0
    else:
        assert set(body) == {"error"}
        assert body["error"]["code"] == case.code
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if case.status == 503:
        assert "retry-after" in r.headers
    health = await served.client.get("/healthz")
    assert health.status_code == 200


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 20 and sum(c.status == 200 for c in CASES) >= 4


async def test_odd_but_valid_audio_reports_its_own_format(served: Served) -> None:
    r = await served.client.post("/v1/classify", content=wav(1.0, sr=48000, channels=6, subtype="PCM_24"),
                                 headers=WAV_TYPE)
    body = r.json()
    assert (body["sample_rate"], body["channels"], body["format"], body["duration_s"]) == (48000, 6, "WAV/PCM_24", 1.0)
    assert body["frames"]["input"] == 16000 // 160 + 1  # resampled to the model's 16 kHz


async def test_out_of_range_floats_are_flagged_not_clipped(served: Served) -> None:
    r = await served.client.post("/v1/classify", content=encode(4 * tone(1.0, 16000), 16000, subtype="FLOAT"),
                                 headers=WAV_TYPE)
    assert r.status_code == 200 and "unscaled" in r.json()["warnings"][0]


async def test_mutated_files_never_cause_a_server_error(served: Served) -> None:
    """Seeded fuzzing: bit flips, cuts and splices of every container answer 200 or a 4xx error body."""
    rng = np.random.default_rng(2024)
    bases = [encode(tone(1.0, 16000), 16000, fmt, sub) for fmt, sub in
             [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]]
    for i in range(150):
        data = bytearray(bases[i % len(bases)])
        kind = i % 3
        if kind == 0:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(0, min(len(data), 128)))] = int(rng.integers(256))  # header bytes
        elif kind == 1:
            for _ in range(int(rng.integers(1, 40))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(256))
        else:
            cut = int(rng.integers(0, len(data)))
            data = data[:cut] + bytearray(rng.bytes(int(rng.integers(0, 300))))
        r = await asyncio.wait_for(served.client.post("/v1/classify", content=bytes(data), headers=WAV_TYPE), 30)
        assert r.status_code in (200, 400, 413), (i, r.status_code, r.text)
        assert r.status_code == 200 or set(r.json()["error"]) == {"code", "message"}
