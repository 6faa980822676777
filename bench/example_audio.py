"""python -m bench.example_audio [OUT_DIR]: the README's example recordings, rebuilt from ../shared/data.

- long.wav (12.8 s, stereo, 16-bit): the keywords validation clips alexa/10, computer/ed260b00-eb5,
  alexa/21 and computer/3e344859-16e joined by 1.5 s of silence, the same on both channels.
- long30.wav (30 s, mono, 16-bit): one validation clip each of jarvis, computer, view_glass, alexa and
  snowboy (the first of each label in the shipped model's validation list), placed at random times
  (seed 0) in pink noise 30 dB below them, as `make eval-events` builds its recordings.

Prints where the words are (the reference onsets and offsets), so the README's examples can be re-run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.event_scenes import keyword, scenes, validation_clips
from runtime.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "keywords"
SR = 16000
LONG_CLIPS = ("alexa/10", "computer/ed260b00-eb5", "alexa/21", "computer/3e344859-16e")
GAP_S = 1.5
LONG30_LABELS = ("jarvis", "computer", "view_glass", "alexa", "snowboy")
PINK = 1.0


def long_wav(out: Path, data: Path) -> None:
    gap = np.zeros(round(GAP_S * SR), np.float32)
    parts: list[np.ndarray] = []
    for name in LONG_CLIPS:
        if parts:
            parts.append(gap)
        start = sum(map(len, parts))
        parts.append(load_audio(data / f"{name}.flac", SR))
        print(f"long.wav: {name} at {start / SR:.2f}-{(start + len(parts[-1])) / SR:.2f} s")
    mono = np.concatenate(parts)
    sf.write(out / "long.wav", np.stack([mono, mono], axis=1), SR, subtype="PCM_16")


def long30_wav(out: Path, data: Path) -> None:
    val = validation_clips(ROOT / "models" / "keywords.export.json", data)
    first = {label: path for path, label in reversed(val)}  # the first clip of each label
    words = [keyword(first[label], label, SR) for label in LONG30_LABELS]
    scene = scenes(words, "noise", 30.0, 30.0, SR, np.random.default_rng(0), [], noise_exponent=PINK)[0]
    sf.write(out / "long30.wav", scene.audio, SR, subtype="PCM_16")
    for label, onset, offset in scene.events:
        print(f"long30.wav: {label} {onset:.2f}-{offset:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.example_audio", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=Path("."))
    p.add_argument("--data", type=Path, default=DATA)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    long_wav(a.out, a.data)
    long30_wav(a.out, a.data)


if __name__ == "__main__":
    main()
