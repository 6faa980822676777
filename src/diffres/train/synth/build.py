"""Planning, rendering, caching and the manifest of a synthetic speech folder.

Every file is described by a spec (kind, split, voice, text, prosody, room, noise, level), drawn from
its own random stream seeded by (seed, split, kind, label, index): item i is the same whatever came
before it, and `--no-rooms` changes the acoustics of an item, never its voice or text. A spec renders
to the same samples every time (the engines, soxr, pyroomacoustics and the noise are deterministic),
and its hash is stored in the FLAC file's comment, so a re-run reuses every file whose spec has not
changed (an interrupted run resumes) and renders only the others. Negatives are rendered in order until
the requested hours are reached, so the cut-off is also the same every time.

Layout of OUT:
    manifest.json                  cache key, config, engines, voices, split, per-file specs
    texts.json                     the text bank used (pass it back with --texts on another machine)
    train|eval/negative/           negative_{voice}_{i}.flac  (other speech, 1-6 s, runs of up to 10 s)
    train|eval/near_miss/<label>/  nearmiss_{voice}_{i}.flac  (near misses alone and inside sentences)
    train|eval/positive/<label>/   positive_{voice}_{i}.flac  (the keyword spoken by the engines)
File names follow `{kind}_{speaker}_{index}` (the voice as speaker), as diffres.train.data parses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .acoustics import (
    NOISE_COLORS,
    Room,
    apply_impulse_response,
    limit_peak,
    mix_noise,
    random_room,
    rms,
    room_impulse_response,
)
from .nearmiss import keyword_phrase, near_misses, split_phrases
from .texts import TextBank, pick, pseudo_text, sentence_text, system_texts, word_sequence
from .voices import (
    ENGINES,
    Inventory,
    Prosody,
    Voice,
    VoiceSplit,
    inventory,
    sample_prosody,
    sample_voice,
    speak,
    voice_split,
    words_per_second,
)

GENERATOR_VERSION = "1"  # bump when rendering changes: every file's spec hash changes with it
SPLITS = ("train", "eval")
KINDS = ("negative", "near_miss", "positive")
PREFIX = {"negative": "negative", "near_miss": "nearmiss", "positive": "positive"}  # no "_": speaker names parse
UTTERANCE_S = (1.0, 6.0)  # one utterance
RUN_S = (6.0, 10.0)  # continuous speech: several utterances back to back
POSITIVE_MAX_S = 3.0
LEVEL_DBFS = (-32.0, -18.0)  # RMS of a clip before noise
SILENCE_DB = -45.0  # below the loudest 10 ms frame: trimmed from the engine's output ends
PAD_S = ((0.05, 0.3), (0.1, 0.4))  # silence put back before / after, where a room's tail can ring
MIN_SECONDS = 0.15


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; everything except out, workers and quiet goes into the cache key."""

    out: str
    hours: float = 1.0  # of training negatives
    eval_hours: float = 0.25  # of evaluation negatives (held-out voices and languages)
    keywords: tuple[str, ...] = ()  # labels: smart_mirror is spoken "smart mirror"
    near_misses: int = 200  # training near-miss clips per keyword
    eval_near_misses: int = 50
    positives: int = 200  # training synthetic positives per keyword
    eval_positives: int = 50
    near_miss_phrases: int = 40  # distinct near-miss phrases per keyword (a quarter held out for eval)
    seed: int = 0
    split_seed: int = 0  # the held-out voices / languages / phrases; keep it fixed across runs
    sample_rate: int = 16000
    rooms: bool = True
    room_share: float = 0.7  # of clips passed through a simulated room (the rest dry)
    room_pool: int = 256  # distinct random rooms per split, each simulated once per worker; 0: one per clip
    noise_share: float = 0.7  # of clips mixed with white / pink / brown noise
    snr_db: tuple[float, float] = (0.0, 30.0)
    english_share: float = 0.5  # of negatives spoken by English voices (the rest: 120-odd other languages)
    run_share: float = 0.4  # of negatives that are 6-10 s runs of continuous speech
    engines: tuple[str, ...] = ENGINES
    texts: str | None = None  # a saved text bank (texts.json) instead of this machine's texts
    workers: int = 2
    quiet: bool = False

    def key_fields(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("out", "workers", "quiet", "texts"):
            data.pop(name)
        return data


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """An independent stream per item: (seed, split, kind, label, index) -> the same draws every run."""
    return np.random.default_rng([seed] + [int(_hash(str(k))[:8], 16) for k in keys])


# -- planning ----------------------------------------------------------------------------------------------

@dataclass
class Planner:
    """Draws specs; knows the voices, the split, the texts and the near-miss phrases."""

    cfg: SynthConfig
    inv: Inventory
    split: VoiceSplit
    bank: TextBank  # without any keyword
    phrases: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # label -> split -> phrases
    _rooms: dict[str, list[Room]] = field(default_factory=dict)

    def rooms(self, split: str) -> list[Room]:
        """The split's pool of random rooms (drawing one costs nothing; simulating it is what a pool saves)."""
        if split not in self._rooms:
            rng = _rng(self.cfg.seed, split, "rooms")
            self._rooms[split] = [random_room(rng) for _ in range(self.cfg.room_pool)]
        return self._rooms[split]

    @property
    def forbidden(self) -> list[str]:
        return [keyword_phrase(k) for k in self.cfg.keywords]

    def _text(self, rng: np.random.Generator, voice: Voice, n_words: int) -> tuple[str, str]:
        r = rng.random()
        if voice.english:
            kind = "sentence" if r < 0.5 else "words" if r < 0.8 else "pseudo"
        elif voice.script == "latin":  # English text read by a foreign voice: accented speech
            kind = "pseudo" if r < 0.55 else "sentence" if r < 0.85 else "words"
        else:  # English would be read by espeak's English rules: pseudo-words in the language's script
            kind = "pseudo"
        if kind == "sentence" and self.bank.sentences:
            return sentence_text(self.bank, rng, n_words), kind
        if kind == "words" and self.bank.words:
            text = word_sequence(self.bank, rng, n_words)
        else:
            kind, text = "pseudo", pseudo_text(rng, n_words, voice.language, self.forbidden)
        return text + pick(rng, (".", ".", ".", "?", "!", ",")), kind

    def _acoustics(self, split: str, *key: object) -> dict[str, Any]:
        """Pads, level, room and noise, each from its own stream: --no-rooms changes the rooms only, never
        the voice, text or noise of an item."""
        rng = _rng(self.cfg.seed, split, *key, "level")
        pads = [round(float(rng.uniform(*p)), 3) for p in PAD_S]
        level = round(float(rng.uniform(*LEVEL_DBFS)), 2)
        rng = _rng(self.cfg.seed, split, *key, "room")
        room = None
        if self.cfg.rooms and rng.random() < self.cfg.room_share:
            pool = self.rooms(split)
            room = (pool[int(rng.integers(len(pool)))] if pool else random_room(rng)).to_dict()
        rng = _rng(self.cfg.seed, split, *key, "noise")
        noise = None
        if rng.random() < self.cfg.noise_share:
            noise = {"color": str(pick(rng, tuple(NOISE_COLORS))),
                     "snr_db": round(float(rng.uniform(*self.cfg.snr_db)), 2), "seed": int(rng.integers(2 ** 31))}
        return {"pad_s": pads, "level_dbfs": level, "room": room, "noise": noise}

    def _spec(self, split: str, kind: str, label: str | None, index: int, voice: Voice, prosody: Prosody,
              text: str, source: str, phrase: str | None, max_seconds: float, acoustics: dict[str, Any]
              ) -> dict[str, Any]:
        folder = f"{split}/{kind}" + (f"/{label}" if label else "")
        spec = {"kind": kind, "split": split, "label": label, "index": index, "engine": voice.engine,
                "voice": voice.id, "voice_name": voice.name, "language": voice.language, "variant": voice.variant,
                "speaker": voice.speaker, "text": text, "text_source": source, "phrase": phrase,
                "rate": prosody.rate, "pitch": prosody.pitch, "speed": prosody.speed, "max_seconds": max_seconds,
                "sample_rate": self.cfg.sample_rate, **acoustics}
        spec["spec_hash"] = _hash(GENERATOR_VERSION, self.inv.versions.get(voice.engine, ""), spec)
        spec["file"] = f"{folder}/{PREFIX[kind]}_{voice.slug}_{index:06d}.flac"
        return spec

    def negative(self, split: str, index: int) -> dict[str, Any] | None:
        rng = _rng(self.cfg.seed, split, "negative", index)
        acoustics = self._acoustics(split, "negative", index)
        english = rng.random() < self.cfg.english_share
        voice = sample_voice(rng, self.inv, self.split, split == "eval", english) \
            or sample_voice(rng, self.inv, self.split, split == "eval", not english)
        if voice is None:
            return None
        prosody = sample_prosody(rng, voice)
        wps = words_per_second(voice, prosody)
        run = rng.random() < self.cfg.run_share
        target = float(rng.uniform(*(RUN_S if run else UTTERANCE_S)))
        texts, sources, estimate = [], [], 0.0
        while estimate < target * 0.9 or (run and len(texts) < 2):
            n = int(rng.integers(3, 15)) if run else max(2, round((target - 0.3) * wps))
            text, source = self._text(rng, voice, n)
            texts.append(text)
            sources.append(source)
            estimate += n / wps + 0.4
        return self._spec(split, "negative", None, index, voice, prosody, " ".join(texts), "+".join(sources), None,
                          RUN_S[1] if run else UTTERANCE_S[1], acoustics)

    def near_miss(self, split: str, label: str, index: int) -> dict[str, Any] | None:
        phrases = self.phrases[label][split]
        if not phrases:
            return None
        order = _rng(self.cfg.seed, split, "near_miss_order", label).permutation(len(phrases))
        phrase = phrases[int(order[index % len(phrases)])]
        rng = _rng(self.cfg.seed, split, "near_miss", label, index)
        acoustics = self._acoustics(split, "near_miss", label, index)
        voice = sample_voice(rng, self.inv, self.split, split == "eval", True)
        if voice is None:
            return None
        prosody = sample_prosody(rng, voice)
        if rng.random() < 0.5 and self.bank.sentences:  # inside a sentence, anywhere in it
            words = sentence_text(self.bank, rng, int(rng.integers(3, 11))).rstrip(".").split()
            at = int(rng.integers(len(words) + 1))
            text, source = " ".join(words[:at] + [phrase] + words[at:]) + ".", "near_miss_sentence"
        else:
            text, source = phrase + pick(rng, (".", "?", "!")), "near_miss_alone"
        return self._spec(split, "near_miss", label, index, voice, prosody, text, source, phrase, UTTERANCE_S[1],
                          acoustics)

    def positive(self, split: str, label: str, index: int) -> dict[str, Any] | None:
        rng = _rng(self.cfg.seed, split, "positive", label, index)
        acoustics = self._acoustics(split, "positive", label, index)
        voice = sample_voice(rng, self.inv, self.split, split == "eval", True)
        if voice is None:
            return None
        prosody = sample_prosody(rng, voice)
        text = keyword_phrase(label) + pick(rng, (".", "!", "?", ","))
        return self._spec(split, "positive", label, index, voice, prosody, text, "keyword", keyword_phrase(label),
                          POSITIVE_MAX_S, acoustics)


# -- rendering (in worker processes) -----------------------------------------------------------------------

def _trim(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Drop the engine's leading and trailing silence (10 ms frames SILENCE_DB under the loudest)."""
    hop = max(1, sample_rate // 100)
    n = len(x) // hop
    if n == 0:
        return x
    energy = np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)
    loud = np.flatnonzero(energy > max(float(energy.max()) * 10 ** (SILENCE_DB / 10), 1e-10))
    if not len(loud):
        return x[:0]
    return x[loud[0] * hop: (loud[-1] + 1) * hop]


def _stored_hash(path: Path) -> str | None:
    try:
        with sf.SoundFile(path) as f:
            return f.comment or None
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None


def render(spec: dict[str, Any], out: str) -> dict[str, Any] | None:
    """Speak, trim, pad, level, room, noise, write FLAC (PCM 16): the entry for the manifest, or None when
    the engine failed or said nothing. An existing file with this spec's hash is reused as it is."""
    path = Path(out) / spec["file"]
    sr = int(spec["sample_rate"])
    if path.is_file() and _stored_hash(path) == spec["spec_hash"]:
        return {**spec, "seconds": round(sf.info(path).frames / sr, 4), "reused": True}
    voice = Voice(spec["engine"], spec["voice_name"], spec["language"], spec["speaker"], spec["variant"])
    try:
        with tempfile.TemporaryDirectory(prefix="diffres-synth-") as tmp:
            wave, rate = speak(voice, spec["text"], Prosody(spec["rate"], spec["pitch"], spec["speed"]), tmp)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError, sf.LibsndfileError) as exc:
        # deterministic too (the same spec fails again): the item is skipped, not the run
        print(f"synth: {voice.id} failed on {spec['text'][:40]!r}: {exc}", file=sys.stderr)
        return None
    x = soxr.resample(wave.astype(np.float32), rate * float(spec["speed"]), sr, quality="HQ").astype(np.float32)
    x = _trim(x, sr)[: int(spec["max_seconds"] * sr)]
    if len(x) < MIN_SECONDS * sr:
        return None
    fade = min(len(x), sr // 50)
    x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    before, after = (int(p * sr) for p in spec["pad_s"])
    x = np.concatenate([np.zeros(before, np.float32), x, np.zeros(after, np.float32)])
    x *= np.float32(10 ** (spec["level_dbfs"] / 20) / max(rms(x), 1e-9))
    if spec["room"]:
        x = apply_impulse_response(x, room_impulse_response(Room.from_dict(spec["room"]), sr))
    if spec["noise"]:
        noise = spec["noise"]
        x = mix_noise(x, noise["snr_db"], np.random.default_rng(noise["seed"]), noise["color"])
    pcm = np.round(limit_peak(x) * 32767.0).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(path.stem + ".part.flac")
    with sf.SoundFile(tmp_path, "w", sr, 1, "PCM_16", format="FLAC") as f:
        f.comment = spec["spec_hash"]
        f.write(pcm)
    os.replace(tmp_path, path)
    return {**spec, "seconds": round(len(pcm) / sr, 4), "reused": False}


def _render_star(args: tuple[dict[str, Any], str]) -> dict[str, Any] | None:
    return render(*args)


class _Inline(Executor):
    """One worker: render in this process (tests, and no process start-up)."""

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,  # type: ignore[override]
            chunksize: int = 1) -> Iterator[Any]:
        return map(fn, *iterables)


# -- the run -------------------------------------------------------------------------------------------------

def cache_key(cfg: SynthConfig, inv: Inventory, split: VoiceSplit, bank: TextBank) -> str:
    return _hash(GENERATOR_VERSION, cfg.key_fields(), inv.describe(), split.describe(), bank.digest)


def _manifest_complete(out: Path, key: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("cache_key") != key:
        return None
    if all((out / e["file"]).is_file() for e in manifest["files"]):
        return manifest
    return None


def _stale_files(out: Path, keep: set[str]) -> list[Path]:
    found = []
    for split in SPLITS:
        for kind in KINDS:
            folder = out / split / kind
            if folder.is_dir():
                found += [p for p in folder.rglob("*.flac") if str(p.relative_to(out)) not in keep]
    return found


def generate(cfg: SynthConfig) -> dict[str, Any]:
    """Build (or reuse) the folder cfg.out; returns the manifest (also written to OUT/manifest.json)."""
    def log(message: str) -> None:
        if not cfg.quiet:
            print(f"synth: {message}", file=sys.stderr, flush=True)

    started = time.monotonic()
    out = Path(cfg.out)
    inv = inventory(tuple(cfg.engines))
    if not inv.versions:
        raise RuntimeError("no TTS engine found: apt-get install espeak-ng (and flite, festival with festvox voices)")
    vsplit = voice_split(inv, cfg.split_seed)
    bank = TextBank.load(cfg.texts) if cfg.texts else system_texts()
    key = cache_key(cfg, inv, vsplit, bank)
    if (done := _manifest_complete(out, key)) is not None:
        log(f"{out} is up to date (cache key {key}): nothing to do")
        return done
    out.mkdir(parents=True, exist_ok=True)
    bank.save(out / "texts.json")
    planner = Planner(cfg, inv, vsplit, bank.without(keyword_phrase(k) for k in cfg.keywords))
    for label in cfg.keywords:
        phrases = near_misses(label, bank.words, cfg.near_miss_phrases, cfg.seed)
        train, held = split_phrases(phrases, label, cfg.split_seed)
        planner.phrases[label] = {"train": train, "eval": held}

    entries: list[dict[str, Any]] = []
    failed = 0
    pool: Executor = _Inline() if cfg.workers <= 1 else \
        ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn"))
    with pool:
        def run(specs: list[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
            return list(pool.map(_render_star, [(s, str(out)) for s in specs if s is not None], chunksize=2))

        for split in SPLITS:
            target = 3600.0 * (cfg.hours if split == "train" else cfg.eval_hours)
            seconds, index, batch = 0.0, 0, max(8, 8 * cfg.workers)
            while seconds < target:
                specs = [planner.negative(split, i) for i in range(index, index + batch)]
                if not any(specs):
                    log(f"no {split} voices: no {split} negatives")
                    break
                index += batch
                for entry in run(specs):
                    if entry is None:
                        failed += 1
                    elif seconds < target:
                        entries.append(entry)
                        seconds += entry["seconds"]
                log(f"{split} negatives: {seconds / 60:.1f} of {target / 60:.1f} min")
            for label in cfg.keywords:
                for kind, count in (("near_miss", cfg.near_misses if split == "train" else cfg.eval_near_misses),
                                    ("positive", cfg.positives if split == "train" else cfg.eval_positives)):
                    make = planner.near_miss if kind == "near_miss" else planner.positive
                    results = run([make(split, label, i) for i in range(count)])
                    failed += sum(r is None for r in results)
                    entries += [r for r in results if r is not None]
                    log(f"{split} {kind} {label}: {sum(r is not None for r in results)} clips")

    keep = {e["file"] for e in entries}
    for stale in _stale_files(out, keep):
        stale.unlink()
    for e in entries:
        e.pop("reused", None)
    totals: dict[str, dict[str, dict[str, float]]] = {}
    for e in entries:
        t = totals.setdefault(e["split"], {}).setdefault(e["kind"], {"files": 0, "seconds": 0.0})
        t["files"] += 1
        t["seconds"] = round(t["seconds"] + e["seconds"], 3)
    rendered = sum(e["seconds"] for e in entries)
    elapsed = time.monotonic() - started
    manifest = {
        "version": GENERATOR_VERSION, "cache_key": key, "config": cfg.key_fields(),
        "inventory": inv.describe(), "split": vsplit.describe(),
        "near_miss_phrases": planner.phrases,
        "texts": {"file": "texts.json", "digest": bank.digest, "sentences": len(bank.sentences), "words": len(bank.words)},
        "totals": totals, "failed": failed, "files": entries,
    }
    tmp = out / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    os.replace(tmp, out / "manifest.json")
    log(f"{len(entries)} files, {rendered / 3600:.2f} h of audio in {elapsed / 60:.1f} min "
        f"({rendered / max(elapsed, 1e-9):.0f}x real time, {cfg.workers} workers), {failed} failed; cache key {key}")
    return manifest


# -- reading it back (for training) -----------------------------------------------------------------------------

def read_manifest(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / "manifest.json").read_text())


def synth_entries(out: str | Path, split: str | None = None, kind: str | None = None, label: str | None = None
                  ) -> list[dict[str, Any]]:
    """Manifest entries (spec + seconds + file relative to OUT), filtered by split / kind / label."""
    return [e for e in read_manifest(out)["files"]
            if (split is None or e["split"] == split) and (kind is None or e["kind"] == kind)
            and (label is None or e["label"] == label)]


def synth_files(out: str | Path, split: str = "train", kind: str = "negative", label: str | None = None
                ) -> list[Path]:
    """Paths of the generated clips of one split ("train" | "eval") and kind ("negative" | "near_miss" |
    "positive"), optionally of one keyword label; in manifest order."""
    return [Path(out) / e["file"] for e in synth_entries(out, split, kind, label)]


def load_clip(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """A generated clip as mono float32 at sample_rate, through the one decoder (diffres.decode)."""
    from diffres.decode import load_audio

    return load_audio(path, sample_rate)


def keywords_from(folder: str | Path) -> list[str]:
    """Keyword labels of an audio folder (<label>/ subfolders), without _background_ and other _-names."""
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


__all__ = ["GENERATOR_VERSION", "Planner", "SynthConfig", "cache_key", "generate", "keywords_from", "load_clip",
           "read_manifest", "render", "synth_entries", "synth_files"]
