"""`python -m tools.bench.example_audio [OUT_DIR]`: the sample recordings in examples/, rebuilt from ../shared/data.

- alexa.flac, computer.flac: two keyword clips of the shipped model's validation split (never trained on).
- three.wav: a spoken "3" by the digits speaker the shipped digits model held out.
- long.flac (30 s, mono): one validation clip each of jarvis, computer, view_glass, alexa and snowboy
  (the first of each label in the validation list), placed at random times (seed 0) in pink noise
  30 dB below them, as `make eval-events` builds its recordings.

Also writes OUT_DIR/README.md: what each file is, where its words are (the reference onsets and
offsets of long.flac) and the sources' licences.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from diffres.models import MODELS_DIR
from diffres.train.scenes import keyword, scenes
from tools.bench.event_scenes import validation_clips

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SR = 16000
CLIPS = {"alexa.flac": "keywords/alexa/10.flac", "computer.flac": "keywords/computer/ed260b00-eb5.flac",
         "three.wav": "digits/3/3_nicolas_0.wav"}
LONG_LABELS = ("jarvis", "computer", "view_glass", "alexa", "snowboy")
PINK = 1.0
README = """# Sample recordings

Made by `python -m tools.bench.example_audio examples` from `../shared/data`; none of them was used to
train the shipped models (validation clips, and the held-out digits speaker).

| file | what |
|---|---|
| `alexa.flac` | "alexa", 2.0 s, 16 kHz (keywords `alexa/10`) |
| `computer.flac` | "computer", 16 kHz (keywords `computer/ed260b00-eb5`) |
| `three.wav` | "three", 8 kHz, for the `digits` model (FSDD `3_nicolas_0`) |
| `long.flac` | 30 s, 16 kHz: five keywords at random times in pink noise 30 dB below them |

Where the words of `long.flac` are (the loud stretch of each clip, seconds):

{events}

## Sources and licences

- Keywords: the Picovoice wake-word benchmark recordings (crowd-sourced), Apache-2.0
  (https://github.com/Picovoice/wake-word-benchmark). `alexa.flac`, `computer.flac` and `long.flac`
  (mixed with generated noise) are derived from them and are distributed under Apache-2.0.
- Digits: the Free Spoken Digit Dataset (https://github.com/Jakobovski/free-spoken-digit-dataset),
  CC BY-SA 4.0; `three.wav` is an unmodified recording from it and stays under CC BY-SA 4.0.
"""


def long_flac(out: Path, data: Path) -> list[tuple[str, float, float]]:
    val = validation_clips(MODELS_DIR / "keywords.export.json", data / "keywords")
    first = {label: path for path, label in reversed(val)}  # the first clip of each label
    words = [keyword(first[label], label, SR) for label in LONG_LABELS]
    scene = scenes(words, "noise", 30.0, 30.0, SR, np.random.default_rng(0), [], noise_exponent=PINK)[0]
    sf.write(out / "long.flac", scene.audio, SR, subtype="PCM_16")
    return scene.events


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.example_audio", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=ROOT / "examples")
    p.add_argument("--data", type=Path, default=DATA)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for name, source in CLIPS.items():
        shutil.copyfile(a.data / source, a.out / name)
    events = long_flac(a.out, a.data)
    rows = "\n".join(f"- {label}: {onset:.2f}-{offset:.2f} s" for label, onset, offset in events)
    (a.out / "README.md").write_text(README.format(events=rows))
    print(f"wrote {', '.join(sorted(CLIPS) + ['long.flac', 'README.md'])} to {a.out}")


if __name__ == "__main__":
    main()
