"""Long recordings with keywords at known places: what events are calibrated and evaluated on.

Training chooses its event rule on them (validation clips among validation negatives), and
`make eval-events` (tools/bench/events.py) scores a model on them (held-out material). Torch-free.

- Keyword clips are trimmed to their loud stretch (`loud_span`: frames within 25 dB of the loudest,
  gaps under 0.3 s bridged, the stretch with the most energy) plus 0.1 s margins; that stretch is
  the reference event. Training crops its positive windows around the same stretch.
- Backgrounds: coloured noise (white, pink, brown), or other speech: utterances of any list of files
  back to back with short pauses (a held-out digits speaker, held-out TTS voices and languages).
- Conditions: keywords over a background at an SNR (`scenes`); or other speech right next to each
  keyword, 0-1 s before and after it at the same level, over a quiet floor (`adjacent_scenes`):
  where an event's bounds must not slide onto the neighbours.
- Levels: a keyword's loud stretch at -25 dBFS RMS +-6 dB; the background at the SNR below that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffres.decode import load_audio
from diffres.train.synth.acoustics import colored_noise

KEYWORD_DBFS, KEYWORD_SPREAD_DB = -25.0, 6.0
TRIM_DB, TRIM_GAP_S, MARGIN_S, FADE_S = 25.0, 0.3, 0.1, 0.01
GAP_S = (1.5, 6.0)  # silence between consecutive keywords (end to start)
ADJACENT_GAP_S = (0.0, 1.0)  # other speech this close before and after a keyword
FLOOR_SNR_DB = 40.0  # the quiet floor of the adjacent-speech condition


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


def loud_span(energy_db: np.ndarray, frames_per_s: float, trim_db: float = TRIM_DB,
              gap_s: float = TRIM_GAP_S) -> tuple[int, int]:
    """[start, end) frames of the loud stretch: frames within `trim_db` of the loudest, gaps up to
    `gap_s` bridged, the stretch with the most energy."""
    loud = np.flatnonzero(energy_db >= energy_db.max() - trim_db)
    runs, start, prev = [], int(loud[0]), int(loud[0])
    for i in loud[1:].tolist():
        if i - prev > gap_s * frames_per_s:
            runs.append((start, prev + 1))
            start = i
        prev = i
    runs.append((start, prev + 1))
    power = 10 ** (energy_db / 10)
    return max(runs, key=lambda r: float(power[r[0]:r[1]].sum()))


def waveform_energy_db(x: np.ndarray, sr: int) -> np.ndarray:
    """Energy in dB of 10 ms frames."""
    hop = sr // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)


def keyword(path: str | Path, label: str, sr: int) -> Keyword:
    """A keyword clip trimmed around its loud stretch, faded in and out."""
    x = load_audio(path, sr)
    a, b = (i * (sr // 100) for i in loud_span(waveform_energy_db(x, sr), 100))
    margin = round(MARGIN_S * sr)
    lo, hi = max(0, a - margin), min(len(x), b + margin)
    cut = x[lo:hi].astype(np.float32).copy()
    fade = min(round(FADE_S * sr), len(cut) // 2)
    ramp = np.linspace(0, 1, fade, dtype=np.float32)
    cut[:fade] *= ramp
    cut[len(cut) - fade:] *= ramp[::-1]
    return Keyword(label, cut, a - lo, b - lo, rms(x[a:b]))


def utterance(files: list[Path], rng: np.random.Generator, sr: int, cache: dict[Path, np.ndarray]) -> np.ndarray:
    """A random file's audio at unit RMS."""
    f = files[int(rng.integers(len(files)))]
    u = cache.setdefault(f, load_audio(f, sr))
    return u / max(rms(u), 1e-9)


def speech_bed(files: list[Path], seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Utterances in random order with 0.05-0.6 s pauses, at unit RMS over the utterances."""
    n = round(seconds * sr)
    out, pos, voiced = np.zeros(n, np.float32), 0, []
    cache: dict[Path, np.ndarray] = {}
    while pos < n:
        u = utterance(files, rng, sr, cache)
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
    exponent = float(rng.choice([0.0, 1.0, 2.0])) if noise_exponent is None else noise_exponent
    return colored_noise(round(seconds * sr), exponent, rng)


def _gain(k: Keyword, rng: np.random.Generator) -> float:
    return 10 ** ((KEYWORD_DBFS + rng.uniform(-KEYWORD_SPREAD_DB, KEYWORD_SPREAD_DB)) / 20) / max(k.rms, 1e-9)


def scenes(keywords: list[Keyword], kind: str, snr_db: float, seconds: float, sr: int, rng: np.random.Generator,
           speech: list[Path], noise_exponent: float | None = None, name: str | None = None) -> list[Scene]:
    """Every keyword once, packed into recordings of `seconds` at random times over a background."""
    order = rng.permutation(len(keywords))
    condition = name or f"{kind}@{snr_db:g}dB"
    out, i = [], 0
    while i < len(order):
        audio = np.zeros(round(seconds * sr), np.float32)
        scene = Scene(condition, audio)
        pos = round(rng.uniform(0.5, 3.0) * sr)
        while i < len(order) and pos + len(keywords[order[i]].samples) < len(audio):
            k = keywords[order[i]]
            audio[pos:pos + len(k.samples)] += _gain(k, rng) * k.samples
            scene.events.append((k.label, (pos + k.onset) / sr, (pos + k.offset) / sr))
            pos += len(k.samples) + round(rng.uniform(*GAP_S) * sr)
            i += 1
        level = 10 ** ((KEYWORD_DBFS - snr_db) / 20)
        audio += level * background(kind, seconds, sr, rng, speech, noise_exponent)
        out.append(scene)
    return out


def adjacent_scenes(keywords: list[Keyword], seconds: float, sr: int, rng: np.random.Generator, speech: list[Path],
                    name: str = "adjacent") -> list[Scene]:
    """Every keyword once with an utterance of other speech 0-1 s before and after it at the same level, over
    pink noise 40 dB down: the neighbours an event's bounds must not slide onto."""
    order = rng.permutation(len(keywords))
    cache: dict[Path, np.ndarray] = {}
    out, i = [], 0
    while i < len(order):
        audio = np.zeros(round(seconds * sr), np.float32)
        scene, pos = Scene(name, audio), round(rng.uniform(0.2, 1.0) * sr)
        while i < len(order):
            k = keywords[order[i]]
            level = _gain(k, rng)
            before, after = (utterance(speech, rng, sr, cache)[: round(2.0 * sr)] for _ in range(2))
            gaps = [round(rng.uniform(*ADJACENT_GAP_S) * sr) for _ in range(2)]
            total = len(before) + gaps[0] + len(k.samples) + gaps[1] + len(after)
            if pos + total >= len(audio):
                break
            speech_level = level * k.rms  # the keyword's loud stretch and the speech at the same RMS
            audio[pos:pos + len(before)] += speech_level * before
            at = pos + len(before) + gaps[0]
            audio[at:at + len(k.samples)] += level * k.samples
            scene.events.append((k.label, (at + k.onset) / sr, (at + k.offset) / sr))
            at += len(k.samples) + gaps[1]
            audio[at:at + len(after)] += speech_level * after
            pos += total + round(rng.uniform(*GAP_S) * sr)
            i += 1
        audio += 10 ** ((KEYWORD_DBFS - FLOOR_SNR_DB) / 20) * colored_noise(len(audio), 1.0, rng)
        out.append(scene)
        if not scene.events:  # a keyword and its neighbours longer than a recording: drop the keyword
            i += 1
    return out


def background_only(kind: str, snr_db: float, minutes: float, seconds: float, sr: int, rng: np.random.Generator,
                    speech: list[Path], name: str | None = None) -> list[Scene]:
    """Recordings with no keyword at all, at the level the condition's keywords would have over them."""
    level = 10 ** ((KEYWORD_DBFS - snr_db) / 20)
    count = max(1, round(minutes * 60 / seconds))
    condition = name or f"{kind}@{snr_db:g}dB"
    return [Scene(condition, (level * background(kind, seconds, sr, rng, speech)).astype(np.float32))
            for _ in range(count)]
