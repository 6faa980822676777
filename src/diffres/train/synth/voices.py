"""Debian's TTS engines as voices: what is installed, the fixed train / eval split, and speaking.

Engines: espeak-ng (every language it has x its voice variants +m1..+m8, +f1..+f5, +klatt...), flite
(kal, kal16, awb, rms, slt; awb_time only says times and is left out) and festival (every voice under
/usr/share/festival/voices/<language>/). All three were checked to be deterministic: the same text
and settings give the same samples, run after run.

The held-out split (`voice_split`) is by hash of (split_seed, name), so whether a language, an espeak
variant or a speaker is held out does not depend on what else is installed; a few rules make sure each
side has something: English as espeak's en-us / en-gb and festival's plain English stays in training
(near misses and positives need English voices there), and each group (English accents, other
languages, espeak variants, English speakers, other speakers) has at least one held-out member and one
training member when it has two or more. Flite and festival voices made from the same person's
recordings (kal, slt) share a speaker, so they always fall on the same side.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from .texts import pick, pseudo_text, script_of

ENGINES = ("espeak", "flite", "festival")
COMMANDS = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}
HOLDOUT_FRACTION = 0.2  # of each group's languages / variants / speakers kept for evaluation only
TRAIN_LANGUAGES = frozenset({"en-us", "en-gb", "en"})  # always training: near misses and positives need them
FESTIVAL_DIRS = Path("/usr/share/festival/voices")
FESTIVAL_LANGUAGES = {"english": "en", "us": "en-us", "british": "en-gb", "italian": "it", "finnish": "fi",
                      "czech": "cs", "catalan": "ca", "russian": "ru", "spanish": "es", "hindi": "hi",
                      "marathi": "mr", "telugu": "te", "welsh": "cy", "german": "de", "french": "fr"}
# Voices built from the same person's recordings: one speaker for the held-out split.
SPEAKERS = {"kal": "kal", "kal16": "kal", "kal_diphone": "kal", "slt": "slt", "cmu_us_slt_arctic_hts": "slt",
            "awb": "awb", "cmu_us_awb_cg": "awb", "rms": "rms", "cmu_us_rms_cg": "rms", "rab_diphone": "rab",
            "ked_diphone": "ked"}
FLITE_LANGUAGES = {"awb": "en-gb-scotland"}  # the others are American English
FLITE_F0 = {"kal": 105.0, "kal16": 105.0, "awb": 120.0, "rms": 100.0, "slt": 170.0}  # their mean pitch, Hz
FLITE_SKIP = {"awb_time"}  # a limited-domain voice: it can only say the time
ENGLISH_ENGINE_WEIGHTS = {"espeak": 0.5, "flite": 0.25, "festival": 0.25}
OTHER_ENGINE_WEIGHTS = {"espeak": 0.85, "festival": 0.15}
TIMEOUT_S = 120


@dataclass(frozen=True)
class Voice:
    """One voice as an engine is asked for it; `speaker` groups voices made from the same recordings."""

    engine: str
    name: str  # what the engine is given: espeak "de+m3", flite "slt", festival "kal_diphone"
    language: str
    speaker: str
    variant: str = ""  # espeak's variant ("" = the language's own voice)

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def slug(self) -> str:
        """The id in file-name letters, no underscores (so `{kind}_{slug}_{i}` names parse as speaker names)."""
        return re.sub(r"[^A-Za-z0-9]+", "-", self.id).strip("-")

    @property
    def english(self) -> bool:
        return self.language == "en" or self.language.startswith("en-")

    @property
    def script(self) -> str:
        return script_of(self.language)


@dataclass(frozen=True)
class Inventory:
    """What is installed: espeak's languages and variants (any pair is a voice), and flite / festival voices."""

    espeak_languages: tuple[str, ...] = ()
    espeak_variants: tuple[str, ...] = ()
    voices: tuple[Voice, ...] = ()  # flite and festival
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def engines(self) -> tuple[str, ...]:
        return tuple(sorted(self.versions))

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.espeak_languages) | {v.language for v in self.voices}))

    def describe(self) -> dict[str, object]:
        return {"versions": self.versions, "espeak_languages": list(self.espeak_languages),
                "espeak_variants": list(self.espeak_variants), "voices": [v.id for v in self.voices]}


def _run(args: Sequence[str], text: str | None = None) -> str:
    return subprocess.run(list(args), input=text, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=True).stdout


def _version(engine: str) -> str:
    """The engine's version line (part of the cache key: another version may speak differently)."""
    done = subprocess.run([COMMANDS[engine] if engine != "festival" else "festival", "--version"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)  # flite exits 1
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if re.search(r"\d\.\d", line)]
    return lines[-1] if lines else "unknown"


def _espeak_data() -> Path | None:
    m = re.search(r"Data at:\s*(\S+)", _run(["espeak-ng", "--version"]))
    return Path(m.group(1)) if m else None


def _espeak_reads_natively(language: str) -> bool:
    """Whether espeak reads our pseudo-text for the language with the language's own rules: it switches
    to English for words it cannot read (e.g. Chinese without its full dictionary), marked "(en)"."""
    if language.startswith("en"):
        return True
    text = pseudo_text(np.random.default_rng(0), 8, language)
    try:
        out = _run(["espeak-ng", "-q", "-x", "-b", "1", "-v", language, "--stdin"], text)
    except (subprocess.SubprocessError, OSError):
        return False
    english = sum(len(m) for m in re.findall(r"\(en\)[^(]*", out))  # phonemes read as English
    return bool(out.strip()) and english <= 0.2 * len(out)


def _espeak_inventory() -> tuple[tuple[str, ...], tuple[str, ...]]:
    lines = _run(["espeak-ng", "--voices"]).splitlines()[1:]
    languages = sorted({line.split()[1] for line in lines if len(line.split()) > 4 and "mb/" not in line})
    with ThreadPoolExecutor(8) as pool:
        ok = list(pool.map(_espeak_reads_natively, languages))
    languages = [lang for lang, good in zip(languages, ok) if good]
    data = _espeak_data()
    variants = [""]
    if data is not None and (data / "voices" / "!v").is_dir():
        variants += sorted(p.name for p in (data / "voices" / "!v").iterdir()
                           if p.is_file() and re.fullmatch(r"[A-Za-z0-9]+", p.name))
    return tuple(languages), tuple(variants)


def _flite_voices() -> list[Voice]:
    out = _run(["flite", "-lv"])
    names = out.split(":", 1)[1].split() if ":" in out else []
    return [Voice("flite", n, FLITE_LANGUAGES.get(n, "en-us"), SPEAKERS.get(n, f"flite-{n}"))
            for n in sorted(names) if n not in FLITE_SKIP]


def _festival_voices() -> list[Voice]:
    voices = []
    for scm in sorted(FESTIVAL_DIRS.glob("*/*/festvox/*.scm")):
        voice_dir = scm.parent.parent
        language = FESTIVAL_LANGUAGES.get(voice_dir.parent.name)
        if scm.stem != voice_dir.name or language is None:
            continue
        voices.append(Voice("festival", voice_dir.name, language, SPEAKERS.get(voice_dir.name, voice_dir.name)))
    return voices


@lru_cache(maxsize=8)
def inventory(engines: tuple[str, ...] = ENGINES) -> Inventory:
    """The installed engines and voices among `engines` (a missing engine is simply absent)."""
    found = [e for e in engines if e in COMMANDS and shutil.which(COMMANDS[e])]
    languages: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    voices: list[Voice] = []
    if "espeak" in found:
        languages, variants = _espeak_inventory()
    if "flite" in found:
        voices += _flite_voices()
    if "festival" in found:
        voices += _festival_voices()
    return Inventory(languages, variants, tuple(voices), {e: _version(e) for e in found})


# -- the held-out split ----------------------------------------------------------------------------------

def _score(split_seed: int, group: str, key: str) -> float:
    digest = hashlib.sha256(f"{split_seed}:{group}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def _held_out(keys: Iterable[str], split_seed: int, group: str, forced_train: frozenset[str] = frozenset()
              ) -> set[str]:
    """Keys whose hash falls under HOLDOUT_FRACTION, with at least one held out and one kept when possible."""
    candidates = sorted(set(keys) - forced_train, key=lambda k: _score(split_seed, group, k))
    total = len(set(keys))
    held = {k for k in candidates if _score(split_seed, group, k) < HOLDOUT_FRACTION}
    if not held and candidates and total >= 2:
        held.add(candidates[0])
    if held and len(held) == total:
        held.discard(candidates[-1])
    return held


@dataclass(frozen=True)
class VoiceSplit:
    """Languages, espeak variants and speakers heard only in evaluation: a voice is held out when any of
    its language, variant or speaker is."""

    split_seed: int
    eval_languages: frozenset[str]
    eval_variants: frozenset[str]
    eval_speakers: frozenset[str]

    def is_eval(self, voice: Voice) -> bool:
        return (voice.language in self.eval_languages or voice.variant in self.eval_variants
                or voice.speaker in self.eval_speakers)

    def describe(self) -> dict[str, object]:
        return {"split_seed": self.split_seed, "holdout_fraction": HOLDOUT_FRACTION,
                "eval_languages": sorted(self.eval_languages), "eval_variants": sorted(self.eval_variants),
                "eval_speakers": sorted(self.eval_speakers)}


def voice_split(inv: Inventory, split_seed: int = 0) -> VoiceSplit:
    """The held-out languages, espeak variants and speakers (rules in the module docstring)."""
    languages = inv.languages
    english = [lang for lang in languages if lang == "en" or lang.startswith("en-")]
    other = [lang for lang in languages if lang not in english]
    speakers_en = sorted({v.speaker for v in inv.voices if v.english})
    speakers_other = sorted({v.speaker for v in inv.voices if not v.english} - set(speakers_en))
    return VoiceSplit(
        split_seed,
        frozenset(_held_out(english, split_seed, "english", TRAIN_LANGUAGES) | _held_out(other, split_seed, "language")),
        frozenset(_held_out(inv.espeak_variants, split_seed, "variant", frozenset({""}))),
        frozenset(_held_out(speakers_en, split_seed, "speaker-en") | _held_out(speakers_other, split_seed, "speaker")),
    )


def _espeak_voice(language: str, variant: str) -> Voice:
    return Voice("espeak", f"{language}+{variant}" if variant else language, language,
                 f"espeak-{variant or 'default'}", variant)


def sample_voice(rng: np.random.Generator, inv: Inventory, split: VoiceSplit, evaluation: bool, english: bool
                 ) -> Voice | None:
    """A voice of the split's side (evaluation or training), English or not; None when there is none."""
    langs = [lang for lang in inv.espeak_languages if (lang == "en" or lang.startswith("en-")) == english]
    variants = list(inv.espeak_variants)
    if evaluation:
        eval_langs = [lang for lang in langs if lang in split.eval_languages]
        eval_vars = [v for v in variants if v in split.eval_variants]
        espeak_ok = bool(langs and variants and (eval_langs or eval_vars))
    else:
        langs = [lang for lang in langs if lang not in split.eval_languages]
        variants = [v for v in variants if v not in split.eval_variants]
        espeak_ok = bool(langs and variants)
    others = [v for v in inv.voices if v.english == english and split.is_eval(v) == evaluation]
    weights = ENGLISH_ENGINE_WEIGHTS if english else OTHER_ENGINE_WEIGHTS
    available = {e: w for e, w in weights.items()
                 if (espeak_ok if e == "espeak" else any(v.engine == e for v in others))}
    if not available:
        return None
    engines = sorted(available)
    p = np.array([available[e] for e in engines])
    engine = engines[int(rng.choice(len(engines), p=p / p.sum()))]
    if engine != "espeak":
        pool = [v for v in others if v.engine == engine]
        return pool[int(rng.integers(len(pool)))]
    if not evaluation:
        return _espeak_voice(pick(rng, langs), pick(rng, variants))
    # held out by language (any variant) or by variant (any language of this kind)
    if eval_langs and (not eval_vars or rng.random() < 0.5):
        return _espeak_voice(pick(rng, eval_langs), pick(rng, variants))
    return _espeak_voice(pick(rng, langs), pick(rng, eval_vars))


# -- speaking --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prosody:
    """How fast and how high: espeak's words per minute and 0-99 pitch; flite / festival's duration
    stretch and (flite) mean F0 in Hz; `speed` resamples flite / festival output (tempo and pitch
    together, like a tape played faster), their only pitch control where the voice has none (festival's
    HTS and clunits voices, flite's rms) and the only tempo control of festival's HTS / clunits voices,
    which ignore Duration_Stretch."""

    rate: float
    pitch: float | None
    speed: float = 1.0


def sample_prosody(rng: np.random.Generator, voice: Voice) -> Prosody:
    if voice.engine == "espeak":
        return Prosody(round(float(rng.uniform(120, 230))), round(float(rng.uniform(10, 90))))
    stretch = round(float(rng.uniform(0.8, 1.3)), 3)
    speed = round(float(rng.uniform(0.9, 1.1)), 3)
    base = FLITE_F0.get(voice.name) if voice.engine == "flite" else None
    pitch = round(base * float(rng.uniform(0.8, 1.25)), 1) if base else None
    return Prosody(stretch, pitch, speed)


def words_per_second(voice: Voice, prosody: Prosody) -> float:
    """About how many words a second the voice reads at this prosody: to size texts to a duration."""
    if voice.engine == "espeak":
        return prosody.rate / 60.0
    return 2.6 * prosody.speed / prosody.rate


def speak(voice: Voice, text: str, prosody: Prosody, workdir: str | Path) -> tuple[np.ndarray, int]:
    """The engine's audio for the text (mono float32, the engine's own rate). Raises on an engine error."""
    workdir = Path(workdir)
    wav, txt = workdir / "out.wav", workdir / "in.txt"
    if voice.engine == "espeak":
        args = ["espeak-ng", "-v", voice.name, "-s", str(int(prosody.rate)), "-p", str(int(prosody.pitch or 50)),
                "-b", "1", "-w", str(wav), "--stdin"]
        subprocess.run(args, input=text.encode(), capture_output=True, timeout=TIMEOUT_S, check=True)
    elif voice.engine == "flite":
        txt.write_text(text, encoding="utf-8")
        args = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={prosody.rate}"]
        if prosody.pitch:
            args += ["--setf", f"int_f0_target_mean={prosody.pitch}"]
        subprocess.run(args + ["-f", str(txt), "-o", str(wav)], capture_output=True, timeout=TIMEOUT_S, check=True)
    elif voice.engine == "festival":
        txt.write_text(text, encoding="utf-8")
        args = ["text2wave", "-eval", f"(voice_{voice.name})", "-eval", f"(Parameter.set 'Duration_Stretch {prosody.rate})",
                "-o", str(wav), str(txt)]
        subprocess.run(args, capture_output=True, timeout=TIMEOUT_S, check=True)
    else:
        raise ValueError(f"unknown engine {voice.engine!r}")
    samples, rate = sf.read(wav, dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)
