"""Synthetic speech for training keyword spotters, made offline from Debian's TTS engines.

Why: a keyword model whose background label has heard four speakers raises hundreds of false alarms
an hour on other people's speech. This package makes, reproducibly from a seed, hours of other
speech (espeak-ng in 120-odd languages x 100 voice variants, flite and festival voices, reading
sentences, word sequences and pseudo-words), near misses of each keyword, and (kept apart, to try)
synthetic positives, optionally in simulated rooms and noise, with a fixed set of voices and languages
held out for evaluation only. Torch-free: numpy, soundfile, soxr and pyroomacoustics (rooms only).

    python -m diffres.train.synth --out data/synth --hours 2 --eval-hours 0.5 \\
        --keywords alexa computer jarvis smart_mirror snowboy view_glass --seed 0

For training:
    synth_files(out, "train", "negative")              other speech, for the background label
    synth_files(out, "train", "near_miss", label)      near misses of one keyword (background too)
    synth_files(out, "train", "positive", label)       synthetic positives (optional)
    synth_files(out, "eval", ...)                      the same, held-out voices / languages / phrases
    load_clip(path, sample_rate)                       float32 mono, through diffres.decode
    reverberate(x, sr, rng) / mix_noise(x, snr_db, rng) / augment(x, sr, rng, rirs=RirBank(200, sr))
"""

from __future__ import annotations

from .acoustics import (
    RirBank,
    Room,
    apply_impulse_response,
    augment,
    colored_noise,
    measured_snr_db,
    mix_noise,
    random_room,
    reverberate,
    room_impulse_response,
)
from .build import SynthConfig, generate, keywords_from, load_clip, read_manifest, synth_entries, synth_files
from .nearmiss import CURATED, keyword_phrase, near_misses, split_phrases
from .texts import TextBank, system_texts
from .voices import Inventory, Voice, VoiceSplit, inventory, voice_split

__all__ = [
    "CURATED", "Inventory", "RirBank", "Room", "SynthConfig", "TextBank", "Voice", "VoiceSplit",
    "apply_impulse_response", "augment", "colored_noise", "generate", "inventory", "keyword_phrase",
    "keywords_from", "load_clip", "measured_snr_db", "mix_noise", "near_misses", "random_room", "read_manifest", "reverberate",
    "room_impulse_response", "split_phrases", "synth_entries", "synth_files", "system_texts",
    "voice_split",
]
