"""Audio-folder datasets (DIR/<label>/*.wav|flac), seeded splits, and batches of cached mel spectra."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from diffres.train.requires import torch  # the `train` extra, or an error naming it

from diffres.decode import load_audio  # noqa: F401 - the one decoder: training reads audio as the service does

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
SPEAKER_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<index>\d+)$")


@dataclass(frozen=True)
class Clip:
    path: str
    label: int
    speaker: str | None


def scan_audio_folder(root: str | Path) -> tuple[list[Clip], list[str]]:
    """Clips and sorted label names. Speakers come from `{label}_{speaker}_{i}` names, when all match."""
    root = Path(root)
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, name in enumerate(labels) for f in sorted((root / name).iterdir())
             if f.suffix.lower() in AUDIO_SUFFIXES]
    if not files:
        raise ValueError(f"no audio in {root}: expected {root}/<label>/*.wav|flac")
    matches = [SPEAKER_NAME.match(f.stem) for f, _ in files]
    with_speakers = all(matches)
    clips = [Clip(str(f), i, m.group("speaker") if with_speakers else None) for (f, i), m in zip(files, matches)]
    return clips, labels


def split_clips(clips: list[Clip], val_fraction: float, seed: int, holdout_speaker: str | None
                ) -> tuple[list[Clip], list[Clip], str | None]:
    """Speaker-held-out when clips carry speakers (the honest measure), else stratified by label."""
    speakers = sorted({c.speaker for c in clips if c.speaker is not None})
    if speakers:
        held = holdout_speaker or random.Random(seed).choice(speakers)
        if held not in speakers:
            raise ValueError(f"speaker {held!r} not among {speakers}")
        return [c for c in clips if c.speaker != held], [c for c in clips if c.speaker == held], held
    rng = random.Random(seed)
    by_label: dict[int, list[Clip]] = defaultdict(list)
    for c in clips:
        by_label[c.label].append(c)
    train, val = [], []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        n_val = max(1, round(len(group) * val_fraction))
        val += group[:n_val]
        train += group[n_val:]
    return train, val, None


def native_sample_rate(clips: list[Clip]) -> int:
    rates = [sf.info(c.path).samplerate for c in clips[:: max(1, len(clips) // 50)]]
    return max(set(rates), key=rates.count)


def crop_or_pad(mels: list[torch.Tensor], n_frames: int, rng: np.random.Generator, random_crop: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [T_i, F] mel powers into [B, n_frames, F], padded at the end, plus each row's real frames [B].

    Longer clips are cropped (randomly in training, centred otherwise); shorter ones keep their
    length and are zero-padded after their end, which the model ignores row by row (each row is
    classified as if alone), so a clip trains at the resolution it is served at.
    """
    batch = torch.zeros(len(mels), n_frames, mels[0].shape[1])
    lengths = torch.zeros(len(mels), dtype=torch.int64)
    for i, m in enumerate(mels):
        if m.shape[0] >= n_frames:
            extra = m.shape[0] - n_frames
            offset = int(rng.integers(0, extra + 1)) if random_crop else extra // 2
            batch[i] = m[offset: offset + n_frames]
            lengths[i] = n_frames
        else:
            batch[i, : m.shape[0]] = m
            lengths[i] = m.shape[0]
    return batch, lengths
