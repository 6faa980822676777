"""Background material for the "nothing here" label, and mixing it into clips as augmentation.

Three kinds, all as cached mel power [T, F] like the clips themselves:
- ambient: generated digital silence and white / pink / brown noise at low to moderate levels, and
  the quiet parts of the training clips (the stretches around each keyword);
- sounds: folders of non-target audio named by the user (`--negatives`: noise, music, other speech),
  every audio file below them, and the training clips played backwards (speech-like, same voices
  and microphones, but no keyword). A folder made by `python -m diffres.train.synth` gives its
  training split only (its other speech and near misses); its evaluation split, other voices and
  languages, is never trained on. Short files are joined back to back with short pauses, so the
  model also sees what a window of continuous unrelated speech looks like. When a folder's file
  names carry speakers (`{label}_{speaker}_{i}`) one speaker is held out for validation, so the
  false-accept rate is measured on speech the model never heard; otherwise a seeded share is;
- hard: windows a first model mistook for keywords on long streams of the training negatives
  (mining.py), trained on as they are.
Mixing happens in the mel-power domain (power of a sum ~ sum of powers for independent sources),
so clips stay cached and no waveform is mixed per step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from diffres.train.requires import torch  # the `train` extra, or an error naming it

from diffres.train.synth.acoustics import colored_noise

from .data import AUDIO_SUFFIXES, SPEAKER_NAME

BACKGROUND_LABEL = "_background_"
QUIET_DB = -30.0  # a frame is quiet when its power is this far below the clip's loudest frame
MIN_QUIET_S = 0.3  # shortest quiet stretch worth a background example
NOISE_CLIPS = 160  # generated noise clips (train); a quarter as many, other seed, for validation
PAUSE_POWER = 1e-8  # mel power of the pauses put between joined sounds


@dataclass
class Background:
    """Background mel powers for training (ambient and sounds) and validation, and where they came from."""

    ambient: list[torch.Tensor] = field(default_factory=list)
    sounds: list[torch.Tensor] = field(default_factory=list)
    hard: list[torch.Tensor] = field(default_factory=list)
    val: list[torch.Tensor] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    holdout_speaker: str | None = None

    @property
    def pool(self) -> list[torch.Tensor]:
        """Everything, for mixing into clips."""
        return self.ambient + self.sounds

    def examples(self, count: int, max_frames: int, rng: np.random.Generator) -> list[torch.Tensor]:
        """A third hard windows (when mined), the rest half ambient crops, half runs of joined sounds (all
        ambient when there are no sounds)."""
        n_hard = count // 3 if self.hard else 0
        n_sounds = (count - n_hard) // 2 if self.sounds else 0
        hard = [self.hard[int(i)] for i in rng.integers(len(self.hard), size=n_hard)] if n_hard else []
        return (random_crops(self.ambient, count - n_hard - n_sounds, max_frames, rng)
                + joined_runs(self.sounds, n_sounds, max_frames, rng) + hard)


@dataclass
class NegativeFiles:
    """Files of the negatives folders for training and for validation, and the speaker held out (if any).

    `near_miss` names the files (of either split) that are near-miss phrases of a synth folder: the
    event rule's calibration (calibrate.py) keeps them apart from other speech."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    holdout_speaker: str | None = None
    near_miss: set[str] = field(default_factory=set)

    @property
    def val_speech(self) -> list[str]:
        """Validation files that are not near-miss phrases."""
        return [f for f in self.val if f not in self.near_miss]

    @property
    def val_near_miss(self) -> list[str]:
        """Validation files that are near-miss phrases."""
        return [f for f in self.val if f in self.near_miss]


def negative_files(folders: list[str], seed: int, holdout_speaker: str | None,
                   val_fraction: float = 1 / 7) -> NegativeFiles:
    """Audio files below each folder, split train / val: a held-out speaker when names carry one, else a
    seeded share; a synth folder gives its training split only."""
    out = NegativeFiles()
    for folder in folders:
        files, synthetic = _folder_files(folder)
        if synthetic:
            from diffres.train.synth import synth_files

            out.near_miss |= {str(f) for f in synth_files(folder, "train", "near_miss")}
        speakers = [SPEAKER_NAME.match(Path(f).stem) for f in files]
        if not synthetic and all(speakers):
            names = sorted({m.group("speaker") for m in speakers})
            held = holdout_speaker or random.Random(seed + 1).choice(names)
            out.holdout_speaker = held
            out.val += [f for f, m in zip(files, speakers) if m.group("speaker") == held]
            out.train += [f for f, m in zip(files, speakers) if m.group("speaker") != held]
            continue
        shuffled = files[:]
        random.Random(seed).shuffle(shuffled)
        n_val = max(1, round(len(files) * val_fraction))
        out.val += shuffled[:n_val]
        out.train += shuffled[n_val:]
    return out


def _folder_files(folder: str) -> tuple[list[str], bool]:
    """(sorted audio files, whether the folder is a synth output: then its training split only)."""
    root = Path(folder)
    if (root / "manifest.json").is_file():
        from diffres.train.synth import synth_files

        files = [str(f) for kind in ("negative", "near_miss") for f in synth_files(root, "train", kind)]
        return sorted(files), True
    files = sorted(str(f) for f in root.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"no audio below negatives folder {folder}")
    return files, False


def generated_noise(count: int, n_samples: int, seed: int) -> list[np.ndarray]:
    """Silence and coloured noise at -100 to -25 dBFS RMS: what a quiet room and a cheap microphone give."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(count):
        if i % 8 == 0:
            clips.append(np.zeros(n_samples, np.float32))
            continue
        level = 10 ** (rng.uniform(-100, -25) / 20)
        clips.append(level * colored_noise(n_samples, float(rng.choice([0.0, 1.0, 2.0])), rng))
    return clips


def quiet_parts(mel: torch.Tensor, min_frames: int) -> list[torch.Tensor]:
    """Stretches of at least min_frames frames whose power is QUIET_DB below the clip's loudest frame."""
    energy = mel.mean(1)
    quiet = (energy < energy.max() * 10 ** (QUIET_DB / 10)).tolist() + [False]
    parts, start = [], None
    for i, q in enumerate(quiet):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start >= min_frames:
                parts.append(mel[start:i])
            start = None
    return parts


def random_crops(pool: list[torch.Tensor], count: int, max_frames: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Crops of random length (a quarter to all of max_frames) at random places of random pool items."""
    crops = []
    for j in rng.integers(len(pool), size=count):
        item = pool[j]
        n = min(item.shape[0], int(rng.integers(max(1, max_frames // 4), max_frames + 1)))
        start = int(rng.integers(0, item.shape[0] - n + 1))
        crops.append(item[start: start + n])
    return crops


def joined_runs(pool: list[torch.Tensor], count: int, max_frames: int, rng: np.random.Generator,
                max_pause: int = 30) -> list[torch.Tensor]:
    """Random pool items back to back with pauses of up to max_pause near-silent frames, cut to a
    random length of half to all of max_frames: continuous unrelated sound, as long windows see it."""
    runs = []
    for _ in range(count):
        target = int(rng.integers(max(1, max_frames // 2), max_frames + 1))
        parts, n = [], 0
        while n < target:
            item = pool[int(rng.integers(len(pool)))]
            pause = torch.full((int(rng.integers(0, max_pause + 1)), item.shape[1]), PAUSE_POWER)
            parts += [item, pause]
            n += item.shape[0] + pause.shape[0]
        run = torch.cat(parts)
        start = int(rng.integers(0, run.shape[0] - target + 1))
        runs.append(run[start: start + target])
    return runs


def tiled(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """mel repeated along time and cut to `frames` frames."""
    return mel.repeat(-(-frames // mel.shape[0]), 1)[:frames]


def mix_at_snr(clip: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """clip + noise (mel powers, noise tiled or cut to the clip's length) at the given SNR of mean powers."""
    noise = tiled(noise, clip.shape[0])
    gain = clip.mean() / noise.mean().clamp_min(1e-12) * 10 ** (-snr_db / 10)
    return clip + gain * noise
