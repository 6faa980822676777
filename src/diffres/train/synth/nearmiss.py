"""Near misses: words and phrases that sound close to a keyword but are not it.

Hand-picked lists for the shipped keywords, plus an automatic generator for any keyword, so that
`diffres train` users with their own keywords get near misses too. The generator works on letters and
syllables (a keyword is a label such as "smart_mirror", spoken as "smart mirror"):
- sound-alike letter edits: voiced / unvoiced and other close consonants, vowel swaps, a dropped letter,
  another onset (rhymes: jarvis -> harvis);
- syllables: dropped at either end (compu, lexa), a word split in two (a lexa), a filler inside
  (jar of vis), other endings (alexia, alexis, computing);
- neighbouring words: dictionary words close in spelling (commuter, minor, harvest);
- phrases: one word of a phrase swapped for a neighbour (start mirror), one word alone, the order
  swapped, a filler between (view the glass).
A candidate is rejected when it contains the keyword: espeak-ng's English phonemes (stress and word
breaks ignored) containing the keyword's, which also rejects homophones such as "snow boy" for
snowboy; without espeak-ng, the letters containing the keyword's. Kept candidates are ranked by
spelling similarity, mixing the kinds, so the first few are the closest of each kind.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np

from .texts import squash

CURATED: dict[str, tuple[str, ...]] = {
    "alexa": ("alexander", "a lexus", "alexis", "electra", "alex", "alexia", "a lexa car", "alaska", "elixir",
              "a letter", "relax a", "unless a", "elect a", "allegra", "I'll ask her", "alexandra", "lexicon",
              "a lesson", "alexei", "annexe"),
    "computer": ("computing", "commuter", "compute her", "compute", "computed", "compost", "come pewter",
                 "commuter train", "compete her", "impute her", "cute butter", "come to her", "computation",
                 "competitor", "composer", "can pewter", "commuting", "compiler", "compuserve", "comp you there"),
    "jarvis": ("jar of this", "service", "harvest", "travis", "jar vest", "carve his", "java is", "jarred this",
               "davis", "garvey's", "nervous", "jars", "starve is", "charles", "jervis bay", "jaws", "marvel",
               "harvey", "jar of fish", "car this"),
    "smart_mirror": ("smart minor", "start mirror", "small mirror", "smart miller", "smart dinner",
                     "sharp mirror", "hard mirror", "smart error", "smart near her", "smarter", "smart member",
                     "mart mirror", "smart reader", "mirror", "smart", "smart mirage", "smart memory",
                     "a smart remark", "art mirror", "smart meter"),
    "snowboy": ("snow boat", "snowball", "so boy", "snowbird", "no boy", "snowy", "snowboard", "slow boy",
                "snow toy", "snowbow", "now boy", "show boy", "snow day", "know boy", "snowden", "snow globe",
                "so bold", "snow bay", "cowboy", "tomboy"),
    "view_glass": ("few glass", "view class", "blue glass", "view grass", "new glass", "you glass", "view gas",
                   "few class", "view plus", "review glass", "viewing glass", "fuel gas", "few grass",
                   "look glass", "view last", "view brass", "hue glass", "view lass", "blue grass", "the glass"),
}

_CLOSE_CONSONANTS = {"b": "pvm", "p": "bt", "d": "tgb", "t": "dpk", "g": "kd", "k": "gt", "c": "gk", "v": "fbw",
                     "f": "vs", "z": "s", "s": "zf", "m": "nb", "n": "m", "l": "r", "r": "lw", "w": "v", "j": "gy",
                     "x": "s", "h": "f"}
_VOWEL_SWAPS = {"a": "eo", "e": "ai", "i": "ea", "o": "ua", "u": "oa", "y": "i"}
_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "br", "sl",
           "sm", "sn", "pl", "ch", "sh")
_ENDINGS = ("ing", "er", "ed", "y", "ia", "is", "an", "o", "ic", "nder")
_FILLERS = ("a", "of", "the")
_VOWELS = "aeiouy"
_STRESS = re.compile(r"[',%=_|: ]")


def keyword_phrase(label: str) -> str:
    """How a label is spoken: smart_mirror -> "smart mirror"."""
    return " ".join(label.replace("_", " ").replace("-", " ").split()).lower()


def syllables(word: str) -> list[str]:
    """Rough written syllables: one per vowel group; of the consonants between two, the last starts the
    next syllable (com-pu-ter, a-le-xa, jar-vis, snow-boy). Good enough to cut and splice words."""
    w = word.lower()
    groups = [(m.start(), m.end()) for m in re.finditer(r"[aeiou]+y?|y(?![aeiou])", w)]
    if len(groups) < 2:
        return [w]
    cuts = []
    for (_, end), (start, _) in pairwise(groups):
        cuts.append(end + max(0, start - end - 1))
    return [w[a:b] for a, b in zip([0] + cuts, cuts + [len(w)])]


def _word_edits(word: str) -> set[str]:
    out: set[str] = set()
    for i, ch in enumerate(word):
        for other in _CLOSE_CONSONANTS.get(ch, "") + _VOWEL_SWAPS.get(ch, ""):
            out.add(word[:i] + other + word[i + 1:])
        if len(word) > 3 and ch not in _VOWELS:  # a dropped vowel leaves clusters espeak spells out
            out.add(word[:i] + word[i + 1:])
    onset = re.match(r"[^aeiou]*", word).group(0)  # type: ignore[union-attr]
    out |= {o + word[len(onset):] for o in _ONSETS}
    return out


def _syllable_edits(word: str, fillers: bool) -> set[str]:
    parts = syllables(word)
    out: set[str] = set()
    if len(parts) >= 2:
        out |= {"".join(parts[:-1]), "".join(parts[1:])}
        for i in range(1, len(parts)):
            head, tail = "".join(parts[:i]), "".join(parts[i:])
            out.add(f"{head} {tail}")
            if fillers and min(len(head), len(tail)) >= 2:
                out |= {f"{head} {f} {tail}" for f in _FILLERS}
    if word[-1] in "aeiou":  # alexa -> alexia, alexis, alexander
        out |= {word[:-1] + e for e in _ENDINGS if e[0] in _VOWELS} | {word + e for e in ("nder", "s")}
    else:
        out |= {word + e for e in _ENDINGS if e != "nder"}
    return out


def _neighbours(word: str, vocabulary: Sequence[str], limit: int = 12) -> list[str]:
    """Dictionary words spelled close to `word` (same length +-3, similarity >= 0.7), closest first."""
    scored = []
    for w in vocabulary:
        if abs(len(w) - len(word)) > 3 or w == word or not w.isalpha():
            continue
        if w[0] != word[0] and w[-2:] != word[-2:]:
            continue  # neither the same start nor the same ending: rarely close, and the scan stays fast
        score = difflib.SequenceMatcher(None, w, word).ratio()
        if score >= 0.7:
            scored.append((-score, w))
    return [w for _, w in sorted(scored)[:limit]]


@lru_cache(maxsize=1)
def _has_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_phonemes(texts: Sequence[str], voice: str = "en-us") -> list[str]:
    """espeak-ng's phoneme strings for each text (stress marks, pauses and word breaks removed)."""
    if not texts:
        return []
    lines = "\n".join(f"{t}." for t in texts) + "\n"
    out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, "--stdin"], input=lines, capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip().splitlines()
    if len(out) != len(texts):  # a text espeak split into two clauses: ask one at a time
        out = [subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, t], capture_output=True, text=True,
                              timeout=60, check=True).stdout.replace("\n", " ") for t in texts]
    return [_STRESS.sub("", o) for o in out]


def _contains_keyword(candidates: list[str], keyword: str,
                      phonemes: Callable[[Sequence[str]], list[str]] | None) -> list[bool]:
    key = squash(keyword)
    by_letters = [squash(c) == key or (key in squash(c) and len(squash(c)) <= len(key) + 2)
                  or f" {keyword} " in f" {c} " for c in candidates]
    if phonemes is None:
        return [key in squash(c) or b for c, b in zip(candidates, by_letters)]
    sounds = phonemes([keyword] + candidates)
    return [sounds[0] in s or b for s, b in zip(sounds[1:], by_letters)]


def near_misses(keyword: str, vocabulary: Sequence[str] = (), count: int = 30, seed: int = 0,
                phonemes: Callable[[Sequence[str]], list[str]] | None | bool = True) -> list[str]:
    """Up to `count` near misses for a keyword label (curated ones first, when there are), in a fixed order.

    vocabulary: real words to find neighbours among (e.g. TextBank.words); phonemes: True for
    espeak-ng when installed, False / None for letters only, or a function texts -> phoneme strings.
    """
    phrase = keyword_phrase(keyword)
    label = "_".join(phrase.split())
    words = phrase.split()
    kinds: dict[str, set[str]] = {"edit": set(), "syllable": set(), "neighbour": set(), "phrase": set()}
    for i, word in enumerate(words):
        for kind, variants in (("edit", _word_edits(word)),
                               ("syllable", _syllable_edits(word, fillers=len(words) == 1)),
                               ("neighbour", _neighbours(word, vocabulary))):
            kinds[kind] |= {" ".join([*words[:i], v, *words[i + 1:]]) for v in variants if v}
    if len(words) >= 2:
        kinds["phrase"] |= set(words) | {" ".join(reversed(words))}
        kinds["phrase"] |= {" ".join(words[:-1] + [f, words[-1]]) for f in ("the", "a", "little", "old")}
    curated = [c.lower() for c in CURATED.get(label, ())]
    if phonemes is True:
        phonemes = espeak_phonemes if _has_espeak() else None
    elif phonemes is False:
        phonemes = None
    candidates = sorted(set().union(*kinds.values()) - set(curated) - {phrase})
    bad = dict(zip(candidates, _contains_keyword(candidates, phrase, phonemes)))  # type: ignore[arg-type]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8], "big"))
    ranked: list[list[str]] = []
    for kind in ("neighbour", "syllable", "phrase", "edit"):
        scored = [(difflib.SequenceMatcher(None, squash(c), squash(phrase)).ratio(), c) for c in kinds[kind]
                  if c in bad and not bad[c]]
        close = [c for s, c in sorted(scored, reverse=True) if 0.5 <= s < 1.0]
        # the closest dozen first, in a seeded order; then the rest
        head, tail = close[:12], close[12:]
        ranked.append([head[i] for i in rng.permutation(len(head))] + tail)
    out = list(dict.fromkeys(curated))
    while len(out) < count and any(ranked):
        for group in ranked:
            if group and len(out) < count:
                c = group.pop(0)
                if c not in out:
                    out.append(c)
    return out[:count]


def split_phrases(phrases: Sequence[str], label: str, split_seed: int, fraction: float = 0.25
                  ) -> tuple[list[str], list[str]]:
    """Near-miss phrases for training and for evaluation only (by hash, like the voices), both non-empty
    when there are two or more."""
    def score(p: str) -> float:
        return int.from_bytes(hashlib.sha256(f"{split_seed}:{label}:{p}".encode()).digest()[:8], "big") / 2.0 ** 64

    held = [p for p in phrases if score(p) < fraction]
    if not held and len(phrases) >= 2:
        held = [min(phrases, key=score)]
    if len(held) == len(phrases) and len(phrases) >= 2:
        held.remove(max(held, key=score))
    return [p for p in phrases if p not in held], held
