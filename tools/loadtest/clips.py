"""The clip set of a load test, shared by the locust users and the in-process baseline.

Short clips are real files posted as they are (FLAC/WAV bytes, 1-5 s keyword clips); long ones
(10-30 s) are real clips decoded by the service's decoder (runtime.audio, at the model's rate),
concatenated and re-encoded as FLAC, so the service windows them.
Without the data folder both kinds are generated (noise plus chirps), so the test still runs.
The set is written to a folder with a manifest, so the locust process reads exactly the same bytes.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from diffres.decode import load_audio

AUDIO_EXTS = (".flac", ".wav")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Clip:
    """One uploadable clip: `file` is relative to the manifest's folder."""

    name: str
    file: str
    seconds: float
    kind: str  # "short" (one inference) or "long" (windowed by the service)


def _encode(samples: np.ndarray, rate: int, audio_format: str = "FLAC") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=audio_format, subtype="PCM_16")
    return buf.getvalue()


def _synthetic(rng: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(150, 800)
    chirp = 0.3 * np.sin(2 * np.pi * (f0 + 200 * t) * t)
    return (chirp * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)) +
            0.02 * rng.standard_normal(n)).astype(np.float32)


def _find_audio(data_dir: Path | None) -> list[Path]:
    if data_dir is None or not data_dir.is_dir():
        return []
    return sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTS)


def build(out_dir: Path, data_dir: Path | None, sample_rate: int, *, n_short: int = 200, n_long: int = 12,
          long_s: tuple[float, float] = (10.0, 30.0), seed: int = 0, short_wav: bool = False) -> list[Clip]:
    """Write the clip files and manifest into `out_dir`; real clips when `data_dir` has any. `short_wav`: the
    short clips re-encoded as 16-bit PCM WAV (uploads that cost next to nothing to decode)."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _find_audio(data_dir)
    clips: list[Clip] = []

    def add(name: str, data: bytes, seconds: float, kind: str) -> None:
        (out_dir / name).write_bytes(data)
        clips.append(Clip(name, name, round(seconds, 3), kind))

    if files:
        for i, path in enumerate(pick.sample(files, min(n_short, len(files)))):
            if short_wav:
                samples, rate = sf.read(str(path), dtype="float32")
                add(f"short-{i:03d}.wav", _encode(samples, rate, "WAV"), len(samples) / rate, "short")
            else:
                add(f"short-{i:03d}{path.suffix.lower()}", path.read_bytes(), sf.info(str(path)).duration, "short")
        for i in range(n_long):
            target = rng.uniform(*long_s)
            parts: list[np.ndarray] = []
            total = 0.0
            while total < target:
                parts.append(load_audio(pick.choice(files), sample_rate))  # the service's decoder
                total += len(parts[-1]) / sample_rate
            add(f"long-{i:02d}.flac", _encode(np.concatenate(parts), sample_rate), total, "long")
    else:
        for i in range(n_short):
            seconds = rng.uniform(1.0, 3.0)
            audio = _encode(_synthetic(rng, seconds, sample_rate), sample_rate, "WAV" if short_wav else "FLAC")
            add(f"short-{i:03d}.{'wav' if short_wav else 'flac'}", audio, seconds, "short")
        for i in range(n_long):
            seconds = rng.uniform(*long_s)
            add(f"long-{i:02d}.flac", _encode(_synthetic(rng, seconds, sample_rate), sample_rate), seconds, "long")
    source = str(data_dir) if files else "generated"
    (out_dir / MANIFEST).write_text(json.dumps({"source": source, "clips": [asdict(c) for c in clips]}, indent=1))
    return clips


def load(folder: Path) -> tuple[str, list[Clip]]:
    """(source, clips) from a folder written by `build`."""
    manifest = json.loads((folder / MANIFEST).read_text())
    return manifest["source"], [Clip(**c) for c in manifest["clips"]]


class Mix:
    """The traffic mix: a long clip with probability `long_fraction`, else a short one.

    `exact=True` places the long clips evenly instead (every 1/long_fraction-th clip): a short
    baseline run then has the intended mix exactly, not a random draw of it.
    """

    def __init__(self, clips: list[Clip], long_fraction: float, seed: int | None = None, exact: bool = False) -> None:
        self.short = [c for c in clips if c.kind == "short"] or clips
        self.long = [c for c in clips if c.kind == "long"] or clips
        self.long_fraction = long_fraction
        self.rng = random.Random(seed)
        self.exact = exact
        self.count = 0

    def next(self) -> Clip:
        if self.exact:
            n, f = self.count, self.long_fraction
            is_long = int((n + 1) * f) > int(n * f)
        else:
            is_long = self.rng.random() < self.long_fraction
        self.count += 1
        return self.rng.choice(self.long if is_long else self.short)
