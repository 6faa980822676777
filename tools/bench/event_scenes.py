"""Long test recordings for the event evaluation: validation keyword clips placed at random times in background.

- Keyword clips: the model's validation clips (models/NAME.export.json `training.val_clips`, else the
  split training uses: model.data.split_clips, seed 0, 15%), each trimmed to where it is loud (frames
  within 25 dB of its loudest, gaps under 0.3 s bridged, 0.1 s margin). That stretch is the
  reference event; the clip's own near-silence is left out so every recording has one background.
- Backgrounds: coloured noise (white, pink or brown, model.background.colored_noise), and other
  speech: one digits speaker the model did not train on (the speaker its training held out of the
  background material), utterances back to back with short pauses, resampled to the model's rate.
- Levels: a keyword's loud stretch at -25 dBFS RMS +-6 dB; the background at the condition's SNR
  below that (speech: RMS of its utterances, pauses excluded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffres.decode import load_audio

KEYWORD_DBFS, KEYWORD_SPREAD_DB = -25.0, 6.0
TRIM_DB, TRIM_GAP_S, MARGIN_S, FADE_S = 25.0, 0.3, 0.1, 0.01
GAP_S = (1.5, 6.0)  # silence between consecutive keywords (end to start)


@dataclass
class Keyword:
    label: str
    samples: np.ndarray  # trimmed, with margins
    onset: int  # of the loud stretch inside `samples`
    offset: int
    rms: float  # of the loud stretch


@dataclass
class Scene:
    """One recording and its reference events (label, onset s, offset s)."""

    condition: str
    audio: np.ndarray
    events: list[tuple[str, float, float]] = field(default_factory=list)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def loud_stretch(x: np.ndarray, sr: int) -> tuple[int, int]:
    """[start, end) samples of the frames within TRIM_DB of the loudest, short gaps bridged, largest energy."""
    hop = sr // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(db >= db.max() - TRIM_DB)
    runs, start, prev = [], loud[0], loud[0]
    for i in loud[1:]:
        if i - prev > TRIM_GAP_S * 100:
            runs.append((start, prev + 1))
            start = i
        prev = i
    runs.append((start, prev + 1))
    power = 10 ** (db / 10)
    a, b = max(runs, key=lambda r: power[r[0]:r[1]].sum())
    return int(a * hop), int(b * hop)


def keyword(path: str, label: str, sr: int) -> Keyword:
    x = load_audio(path, sr)
    a, b = loud_stretch(x, sr)
    margin = round(MARGIN_S * sr)
    lo, hi = max(0, a - margin), min(len(x), b + margin)
    cut = x[lo:hi].astype(np.float32).copy()
    fade = min(round(FADE_S * sr), len(cut) // 2)
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    cut[:fade] *= ramp
    cut[len(cut) - fade:] *= ramp[::-1]
    return Keyword(label, cut, a - lo, b - lo, rms(x[a:b]))


def validation_clips(export_json: Path, data: Path) -> list[tuple[str, str]]:
    """(path, label) of the model's validation clips: as recorded at export, else re-derived like training."""
    training = json.loads(export_json.read_text()).get("training", {}) if export_json.is_file() else {}
    if training.get("val_clips"):
        return [(p, Path(p).parent.name) for p in training["val_clips"]]
    from diffres.train.data import (  # torch: only for the fallback
        scan_audio_folder,
        split_clips,
    )

    clips, labels = scan_audio_folder(data)
    _, val, _ = split_clips(clips, 0.15, 0, None)
    return [(c.path, labels[c.label]) for c in val]


def holdout_speaker(export_json: Path) -> str | None:
    """The digits speaker the model's background training held out (None when it used no folders)."""
    training = json.loads(export_json.read_text()).get("training", {}) if export_json.is_file() else {}
    background = training.get("background") or {}
    return background.get("background_holdout_speaker") or training.get("background_holdout_speaker")


def speech_bed(files: list[Path], seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Utterances in random order with 0.05-0.6 s pauses, at unit RMS over the utterances."""
    n = round(seconds * sr)
    out, pos, voiced = np.zeros(n, np.float32), 0, []
    cache: dict[Path, np.ndarray] = {}
    while pos < n:
        f = files[int(rng.integers(len(files)))]
        u = cache.setdefault(f, load_audio(f, sr))
        u = u / max(rms(u), 1e-9)
        take = min(len(u), n - pos)
        out[pos:pos + take] = u[:take]
        voiced.append(out[pos:pos + take])
        pos += take + round(rng.uniform(0.05, 0.6) * sr)
    return out / max(rms(np.concatenate(voiced)), 1e-9)


def background(kind: str, seconds: float, sr: int, rng: np.random.Generator, speech: list[Path],
               noise_exponent: float | None = None) -> np.ndarray:
    """Unit-RMS background of `kind`: "noise" (white, pink or brown: exponent 0, 1, 2; random when
    None) or "speech"."""
    if kind == "speech":
        return speech_bed(speech, seconds, sr, rng)
    from diffres.train.background import (
        colored_noise,  # the training's own generator (imports torch)
    )

    exponent = float(rng.choice([0.0, 1.0, 2.0])) if noise_exponent is None else noise_exponent
    return colored_noise(round(seconds * sr), exponent, rng)


def scenes(keywords: list[Keyword], kind: str, snr_db: float, seconds: float, sr: int, rng: np.random.Generator,
           speech: list[Path], noise_exponent: float | None = None) -> list[Scene]:
    """Every keyword once, packed into recordings of `seconds` at random times over a background."""
    order = rng.permutation(len(keywords))
    condition = f"{kind}@{snr_db:g}dB"
    out, i = [], 0
    while i < len(order):
        audio = np.zeros(round(seconds * sr), np.float32)
        scene = Scene(condition, audio)
        pos = round(rng.uniform(0.5, 3.0) * sr)
        while i < len(order) and pos + len(keywords[order[i]].samples) < len(audio):
            k = keywords[order[i]]
            gain = 10 ** ((KEYWORD_DBFS + rng.uniform(-KEYWORD_SPREAD_DB, KEYWORD_SPREAD_DB)) / 20) / max(k.rms, 1e-9)
            audio[pos:pos + len(k.samples)] += gain * k.samples
            scene.events.append((k.label, (pos + k.onset) / sr, (pos + k.offset) / sr))
            pos += len(k.samples) + round(rng.uniform(*GAP_S) * sr)
            i += 1
        level = 10 ** ((KEYWORD_DBFS - snr_db) / 20)
        audio += level * background(kind, seconds, sr, rng, speech, noise_exponent)
        out.append(scene)
    return out


def background_only(kind: str, snr_db: float, minutes: float, seconds: float, sr: int, rng: np.random.Generator,
                    speech: list[Path]) -> list[Scene]:
    """Recordings with no keyword at all, at the level the condition's keywords would have over them."""
    level = 10 ** ((KEYWORD_DBFS - snr_db) / 20)
    count = max(1, round(minutes * 60 / seconds))
    return [Scene(f"{kind}@{snr_db:g}dB", (level * background(kind, seconds, sr, rng, speech)).astype(np.float32))
            for _ in range(count)]
