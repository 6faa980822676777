"""Audio made on the spot: hostile-but-valid files (long silence that compresses to nothing, FLAC
without a length) and ordinary short clips, real ones from ../shared/data when present."""

from __future__ import annotations

import io
import random

import numpy as np
import soundfile as sf

from tools.reliability.probe import ROOT

DATA = ROOT.parent / "shared" / "data" / "keywords"
SR = 16000


def encode(x: np.ndarray, sr: int = SR, fmt: str = "FLAC", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def silent_flac(seconds: float, sr: int = SR) -> bytes:
    """Digital silence: a 20-minute FLAC is a few hundred KB, a 2-hour one under 400 KB."""
    buf = io.BytesIO()
    block = np.zeros(sr * 60, np.int16)
    with sf.SoundFile(buf, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        left = round(seconds * sr)
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    return buf.getvalue()


def tone(seconds: float, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    rng = np.random.default_rng(int(freq))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def streamed_flac(seconds: float, sr: int = SR) -> bytes:
    """A valid FLAC whose STREAMINFO says "total samples unknown" (0), as streaming encoders write it."""
    data = bytearray(encode(tone(seconds, sr), sr))
    data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def short_clips(n: int, seed: int = 0) -> list[bytes]:
    """Short keyword clips: real FLACs from ../shared/data when there, else 1-5 s tones."""
    files = sorted(DATA.rglob("*.flac")) if DATA.is_dir() else []
    pick = random.Random(seed)
    if files:
        return [p.read_bytes() for p in pick.sample(files, min(n, len(files)))]
    return [encode(tone(pick.uniform(1, 5), freq=pick.uniform(200, 900))) for _ in range(n)]


def clip_source() -> str:
    return f"real clips from {DATA.relative_to(ROOT.parent)}" if DATA.is_dir() else "generated tones (no data folder)"
