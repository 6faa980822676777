"""Training windows of keyword clips: the whole word inside (positives), or cut (partials, background).

A window is as long as the model's (clip_seconds). Each clip's loud stretch (scenes.loud_span on its
mel energy) is its word. A positive window holds all of it at a random place; with context, other
sounds (speech) sit right before or after the word first, as when someone keeps talking. A partial
window holds its beginning or its end only and is labelled background: a window then supports a
label once it holds the whole word, which is what the event rule's bounds rely on
(diffres/events.py), and "alex" alone is not "alexa".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffres.train.background import PAUSE_POWER
from diffres.train.requires import torch  # the `train` extra, or an error naming it
from diffres.train.scenes import loud_span

CONTEXT_S = (0.2, 1.2)  # how much other sound goes before or after a word
CONTEXT_GAP_S = (0.0, 0.5)  # and the pause between them
CONTEXT_LEVEL_DB = (-10.0, 5.0)  # its level relative to the word


def word_span(mel: torch.Tensor, frames_per_s: float) -> tuple[int, int]:
    """[start, end) frames of the clip's word: its loud stretch (mel power [T, F])."""
    energy_db = 10 * torch.log10(mel.double().mean(1) + 1e-12)
    return loud_span(energy_db.numpy(), frames_per_s)


@dataclass
class Clips:
    """Training clips in several versions (speeds, rooms) as mel power, each with its word's frames."""

    mels: list[list[torch.Tensor]]  # [version][clip]
    spans: list[list[tuple[int, int]]]

    @classmethod
    def of(cls, versions: list[list[torch.Tensor]], frames_per_s: float) -> Clips:
        return cls(versions, [[word_span(m, frames_per_s) for m in mels] for mels in versions])

    def pick(self, clip: int, rng: np.random.Generator) -> tuple[torch.Tensor, tuple[int, int]]:
        """A random version of one clip, and its word's frames."""
        v = int(rng.integers(len(self.mels)))
        return self.mels[v][clip], self.spans[v][clip]


def _pause(frames: int, bins: int) -> torch.Tensor:
    return torch.full((frames, bins), PAUSE_POWER)


def _context(sounds: list[torch.Tensor], level: float, frames_per_s: float, rng: np.random.Generator) -> torch.Tensor:
    """A random stretch of a random sound at `level` times the word's mean power, then a pause."""
    sound = sounds[int(rng.integers(len(sounds)))]
    n = min(sound.shape[0], max(1, round(rng.uniform(*CONTEXT_S) * frames_per_s)))
    start = int(rng.integers(0, sound.shape[0] - n + 1))
    part = sound[start:start + n]
    gain = level * 10 ** (rng.uniform(*CONTEXT_LEVEL_DB) / 10) / max(float(part.mean()), 1e-12)
    return part * gain


def with_context(mel: torch.Tensor, span: tuple[int, int], sounds: list[torch.Tensor], frames_per_s: float,
                 rng: np.random.Generator) -> tuple[torch.Tensor, tuple[int, int]]:
    """The word with other sound before it, after it, or both (each side with a pause of 0-0.5 s)."""
    a, b = span
    level = float(mel[a:b].mean())
    side = int(rng.integers(3))  # 0: before, 1: after, 2: both
    parts, shift = [], 0
    if side in (0, 2):
        before = _context(sounds, level, frames_per_s, rng)
        pause = _pause(round(rng.uniform(*CONTEXT_GAP_S) * frames_per_s), mel.shape[1])
        parts += [before, pause]
        shift = before.shape[0] + pause.shape[0]
    parts.append(mel[a:b])
    if side in (1, 2):
        parts += [_pause(round(rng.uniform(*CONTEXT_GAP_S) * frames_per_s), mel.shape[1]),
                  _context(sounds, level, frames_per_s, rng)]
    return torch.cat(parts), (shift, shift + b - a)


def positive_window(mel: torch.Tensor, span: tuple[int, int], frames: int, rng: np.random.Generator) -> torch.Tensor:
    """`frames` of the clip (all of it when shorter) holding the whole word at a random place; a word longer
    than a window gives its middle."""
    a, b = span
    total = mel.shape[0]
    if total <= frames:
        return mel
    if b - a >= frames:
        start = a + (b - a - frames) // 2
    else:
        start = int(rng.integers(max(0, b - frames), min(a, total - frames) + 1))
    return mel[start:start + frames]


def partial_window(mel: torch.Tensor, span: tuple[int, int], frames: int,
                   rng: np.random.Generator) -> torch.Tensor | None:
    """A window holding only the word's beginning (ending 20-60% into it) or its end (starting 40-80% into
    it); None for a word too short to cut."""
    a, b = span
    length = b - a
    if length < 10:
        return None
    if rng.random() < 0.5:
        end = a + int(rng.uniform(0.2, 0.6) * length)
        return mel[max(0, end - frames):end]
    start = a + int(rng.uniform(0.4, 0.8) * length)
    return mel[start:min(mel.shape[0], start + frames)]
