"""Encode test audio into what browsers and phones record (WebM/Opus, M4A/AAC, ADTS, AMR, video), with PyAV.

Fixtures are made in the test from a real clip (or a synthetic one), never committed as binaries.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass(frozen=True)
class Target:
    """A container + codec as a recorder would write it."""

    name: str
    container: str
    codec: str
    rate: int
    options: dict[str, str] = field(default_factory=dict)  # muxer options
    video: bool = False  # add a small video stream before the audio one


# What people actually upload: browser MediaRecorder, Safari/phones, voice apps, screen recordings.
TARGETS = {
    "webm": Target("webm", "webm", "libopus", 48000, {"live": "1"}),  # like MediaRecorder: no duration, no cues
    "m4a": Target("m4a", "ipod", "aac", 44100),
    "adts": Target("adts", "adts", "aac", 16000),
    "amr": Target("amr", "amr", "libopencore_amrnb", 8000),
    "mp4-video": Target("mp4-video", "mp4", "aac", 16000, video=True),
    "mkv-float": Target("mkv-float", "matroska", "pcm_f32le", 16000),
}


def _frames(x: np.ndarray, sr: int, stream: object, chunk: int = 4096) -> list[object]:
    """The signal as frames in the encoder's sample format and rate (PyAV's resampler converts)."""
    import av

    resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
    out = []
    for i in range(0, len(x), chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i:i + chunk], dtype=np.float32),
                                           format="flt", layout="mono")
        frame.sample_rate = sr
        frame.pts = None
        out += resampler.resample(frame)
    return out + resampler.resample(None)


def encode(x: np.ndarray, sr: int, target: Target) -> bytes:
    """Mono float32 samples at `sr` -> the bytes of a file as `target` describes."""
    av = pytest.importorskip("av", reason="PyAV (the 'av' package) is not installed")
    if "faststart" in target.options.get("movflags", ""):  # moving the index in front re-reads a real file
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"clip.{target.container}"
            _write(av, str(path), x, sr, target)
            return path.read_bytes()
    buf = io.BytesIO()
    _write(av, buf, x, sr, target)
    return buf.getvalue()


def _write(av: Any, sink: str | io.BytesIO, x: np.ndarray, sr: int, target: Target) -> None:
    with av.open(sink, "w", format=target.container, options=target.options) as out:
        video = None
        if target.video:
            video = out.add_stream("mpeg4", rate=10)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream(target.codec, rate=target.rate)
        audio.layout = "mono"
        if video is not None:
            for i in range(max(1, int(len(x) / sr * 10))):
                image = np.full((48, 64, 3), (i * 17) % 255, np.uint8)
                for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
            out.mux(video.encode(None))
        for frame in _frames(x, sr, audio):
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
