"""What the voices read, made only from what is on this machine (nothing is fetched).

English: sentences from Debian's licence texts (/usr/share/common-licenses), package documentation
(/usr/share/doc: README, NEWS, copyright) and Python's own standard-library docstrings; words from
/usr/share/dict/words when a word list is installed (wamerican), else from those sentences.
Other languages: pseudo-words built from syllables, written in the language's own script (Cyrillic,
Greek, Devanagari and the other Brahmic scripts, Arabic, Hebrew, Georgian, Armenian, Ethiopic, Thai,
Myanmar, Hangul, kana, or Latin letters), so that a voice reads them with its own phonology instead of
switching to English; Latin-script languages also read English text, which gives accented speech.
The text bank can be saved (texts.json) and passed back with `--texts`, so another machine with other
documentation installed still produces the same utterances.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sysconfig
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

WORD_LIST = Path("/usr/share/dict/words")
LICENCES = Path("/usr/share/common-licenses")
DOCS = Path("/usr/share/doc")
DOC_NAMES = re.compile(r"^(README|NEWS|copyright)(\.(md|txt|Debian|markdown))?(\.gz)?$", re.IGNORECASE)
MAX_DOC_BYTES = 6_000_000  # of /usr/share/doc read (copyright files repeat the same licences; more adds little)
MIN_WORDS, MAX_WORDS = 4, 40  # a kept sentence's length

_WORD = re.compile(r"^[A-Za-z][a-z]*(?:['-][a-z]+)?[.,;:!?]?$")
_BAD = re.compile(r"(@|://|www\.|\.\w+\(|[<>{}\[\]=_#*|\\/$%^~`]|\.\.|\bc\)|>>>)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_DOCSTRING = re.compile(r'"""(.*?)"""', re.DOTALL)
_ROMAN = re.compile(r"^m{0,3}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")


@dataclass(frozen=True)
class TextBank:
    """English sentences and words to read; `digest` identifies the content (it goes into the cache key)."""

    sentences: tuple[str, ...]
    words: tuple[str, ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (*self.sentences, "\0", *self.words):
            h.update(part.encode() + b"\n")
        return h.hexdigest()[:16]

    def without(self, forbidden: Iterable[str]) -> TextBank:
        """Drop every sentence and word that could contain a keyword (letters compared without spaces,
        so "snow boy" is caught for snowboy and "computers" for computer): negatives must be negative."""
        keys = [squash(f) for f in forbidden if squash(f)]
        if not keys:
            return self

        def clean(text: str) -> bool:
            flat = squash(text)
            return not any(k in flat for k in keys)

        return TextBank(tuple(s for s in self.sentences if clean(s)), tuple(w for w in self.words if clean(w)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"sentences": self.sentences, "words": self.words}, ensure_ascii=False))

    @staticmethod
    def load(path: str | Path) -> TextBank:
        data = json.loads(Path(path).read_text())
        return TextBank(tuple(data["sentences"]), tuple(data["words"]))

    @staticmethod
    def from_text(text: str, words: Sequence[str] = ()) -> TextBank:
        """A bank from given text (tests, or a user's own text file)."""
        sentences = sorted(set(split_sentences(text)))
        vocab = sorted(set(words) or {w.strip(".,;:!?").lower() for s in sentences for w in s.split()})
        return TextBank(tuple(sentences), tuple(w for w in vocab if _speakable(w)))


def squash(text: str) -> str:
    """Lower-case letters only: how keyword containment is checked, whatever the spacing."""
    return "".join(c for c in text.lower() if c.isalpha())


def split_sentences(text: str) -> list[str]:
    """Readable English sentences of a text: prose only (no code, addresses, tables or headings)."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(flat):
            if _BAD.search(sentence):
                continue
            tokens = sentence.split()
            if not MIN_WORDS <= len(tokens) <= MAX_WORDS or not sentence[0].isupper():
                continue
            if not all(_WORD.match(t.strip("\"'()")) for t in tokens):
                continue
            letters = [c for c in sentence if c.isalpha()]
            if not letters or sum(c.islower() for c in letters) < 0.7 * len(letters) or not sentence.isascii():
                continue
            out.append(sentence.rstrip(",;:") if sentence[-1] in ".!?" else sentence.rstrip(",;:") + ".")
    return out


def _read(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", "replace")


def _system_sources() -> list[str]:
    """The texts read, in a fixed order: licences, documentation (capped), Python's docstrings."""
    texts = []
    if LICENCES.is_dir():
        texts += [_read(p) for p in sorted(LICENCES.iterdir()) if p.is_file()]
    if DOCS.is_dir():
        total = 0
        for p in sorted(DOCS.glob("*/*")):
            if total > MAX_DOC_BYTES or not DOC_NAMES.match(p.name) or not p.is_file():
                continue
            try:
                text = _read(p)
            except OSError:
                continue
            total += len(text)
            texts.append(text)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(stdlib.glob("*.py")):
        try:
            texts += [m.group(1) for m in _DOCSTRING.finditer(p.read_text(encoding="utf-8", errors="replace"))]
        except OSError:
            continue
    return texts


@lru_cache(maxsize=1)
def system_texts() -> TextBank:
    """This machine's text bank (a few seconds; cached for the process)."""
    sentences = sorted({s for text in _system_sources() for s in split_sentences(text)})
    if WORD_LIST.is_file():
        words = {w.lower() for w in WORD_LIST.read_text(encoding="utf-8", errors="replace").split()}
    else:
        words = {t.strip(".,;:!?").lower() for s in sentences for t in s.split()}
    return TextBank(tuple(sentences), tuple(sorted(w for w in words if _speakable(w))))


def _speakable(word: str) -> bool:
    """A word a voice says as a word: letters with a vowel, not a Roman numeral or an abbreviation."""
    return (word.isascii() and word.isalpha() and 2 <= len(word) <= 14 and any(c in "aeiouy" for c in word)
            and not _ROMAN.match(word))


# -- choosing text --------------------------------------------------------------------------------------

def pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def sentence_text(bank: TextBank, rng: np.random.Generator, n_words: int) -> str:
    """A real sentence, cut to about n_words (read from its start: natural prosody of a sentence opening)."""
    tokens = pick(rng, bank.sentences).split()
    if len(tokens) <= n_words:
        return " ".join(tokens)
    return " ".join(tokens[:n_words]).rstrip(",;:") + "."


def word_sequence(bank: TextBank, rng: np.random.Generator, n_words: int) -> str:
    """Random dictionary words: speech without sentence prosody, and many words sentences lack."""
    return " ".join(pick(rng, bank.words) for _ in range(max(1, n_words)))


# -- pseudo-words in many scripts ----------------------------------------------------------------------

_LATIN_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z", "ch", "sh", "th", "br", "bl", "dr", "gr", "kr", "pl", "pr", "st", "tr", "sl", "sp", "fl", "gl", "kl", "sk", "sm", "sn"] + [""] * 4
_LATIN_NUCLEI = tuple("aeiou") + ("ai", "au", "ei", "ou", "ea", "ie", "oo")
_LATIN_CODAS = ("",) * 6 + tuple("nmrlsktd") + ("ng", "st", "nt", "rk")
# Letters nearly every Latin-script language reads as itself (no c, q, x, w, y, digraphs): other languages'
# pseudo-words, which their voices then read with their own sounds instead of spelling letters out.
_PLAIN_ONSETS = tuple("bdfghklmnprstvz") + ("", "", "br", "pl", "st", "tr")
_PLAIN_NUCLEI = tuple("aeiou") + ("ai", "au")
_PLAIN_CODAS = ("",) * 6 + tuple("nmrlskt")
_CYRILLIC = dict(zip("abvgdezijklmnoprstufhcy", "абвгдезийклмнопрстуфхцы"))
_GREEK = dict(zip("abgdezikxlmnoprstufhv", "αβγδεζικξλμνοπρστυφχβ"))
# Maori has no b/c/d/..., Irish no k/v/w..., Vietnamese needs tone marks and one-syllable words:
# espeak switches to English for words that break these rules, so they get their own inventories.
_LATIN_BY_LANGUAGE: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "mi": (("", "h", "k", "m", "n", "p", "r", "t", "w", "ng", "wh"), tuple("aeiou"), ("",)),
    "ga": (tuple("bcdfghlmnprst"), tuple("aeiou") + ("ai", "ea", "ui"), ("", "n", "r", "l")),
}
_VIETNAMESE = (tuple("bcdghklmnstv") + ("ch", "nh", "th", "tr", "ng", "ph"),
               ("a", "à", "á", "ả", "ã", "ạ", "e", "é", "ê", "ế", "ô", "ồ", "ơ", "ớ", "u", "ư", "ữ", "i", "ì", "o", "ó"),
               ("", "", "n", "ng", "m", "t", "c"))


def _letters(lo: int, hi: int, word: str = "LETTER") -> tuple[str, ...]:
    return tuple(chr(c) for c in range(lo, hi + 1) if word in unicodedata.name(chr(c), ""))


def _brahmic(base: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Consonants and dependent vowel signs of an ISCII-ordered script block (Devanagari, Bengali, ...)."""
    cons = tuple(chr(base + o) for o in range(0x15, 0x3A) if "LETTER" in unicodedata.name(chr(base + o), ""))
    signs = tuple(chr(base + o) for o in range(0x3E, 0x4D)
                  if "VOWEL SIGN" in unicodedata.name(chr(base + o), "")
                  and "VOCALIC" not in unicodedata.name(chr(base + o), ""))
    return cons, signs


@cache
def _script_table() -> dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """script -> (mode, consonants, vowels): "cv" writes consonant + vowel letter, "abugida" consonant +
    optional vowel sign, "syllabary" one character a syllable (vowels unused)."""
    arabic_c = tuple("بتثجحخدذرزسشصضطظعغفقكلمنهو")
    table: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
        "arabic": ("cv", arabic_c, ("ا", "و", "ي", "")),
        "hebrew": ("cv", tuple("בגדהזחטכלמנסעפצקרשת"), ("א", "ו", "י", "")),
        "georgian": ("cv", tuple("ბგდვზთკლმნპჟრსტფქღყშჩცძწჭხჯჰ"), tuple("აეიოუ")),
        "armenian": ("cv", tuple("բգդզթժլխծկհձղճմյնշչպջռսվտրցփքֆ"), ("ա", "ե", "ի", "ո", "ու", "է")),
        "thai": ("cv", tuple("กขคงจชซดตทนบปผพฟมยรลวสหอ"), ("า", "ิ", "ี", "ุ", "ู", "")),
        "myanmar": ("abugida", _letters(0x1000, 0x1020), _letters(0x102B, 0x1032, "VOWEL SIGN")),
        "sinhala": ("abugida", _letters(0x0D9A, 0x0DC6), _letters(0x0DCF, 0x0DDE, "VOWEL SIGN")),
        "ethiopic": ("syllabary", _letters(0x1200, 0x1357, "SYLLABLE"), ()),
        "kana": ("syllabary", tuple(c for c in _letters(0x3042, 0x3093) if "SMALL" not in unicodedata.name(c)), ()),
    }
    for script, base in (("devanagari", 0x900), ("bengali", 0x980), ("gurmukhi", 0xA00), ("gujarati", 0xA80),
                         ("oriya", 0xB00), ("tamil", 0xB80), ("telugu", 0xC00), ("kannada", 0xC80),
                         ("malayalam", 0xD00)):
        table[script] = ("abugida", *_brahmic(base))
    return table


# espeak-ng / festival language code -> script of its pseudo-text (anything else: Latin letters)
SCRIPT_OF_LANGUAGE: dict[str, str] = {
    **dict.fromkeys(("ru", "ru-lv", "uk", "bg", "be", "kk", "ky", "tt", "cv", "ba", "nog"), "cyrillic"),
    **dict.fromkeys(("el", "grc"), "greek"),
    **dict.fromkeys(("ar", "fa", "ur", "sd"), "arabic"),
    "he": "hebrew", "ka": "georgian", "hy": "armenian", "hyw": "armenian", "am": "ethiopic", "th": "thai",
    "my": "myanmar", "shn": "myanmar", "si": "sinhala", "ko": "hangul", "ja": "kana",
    **dict.fromkeys(("hi", "mr", "ne", "kok"), "devanagari"),
    **dict.fromkeys(("bn", "as", "bpy"), "bengali"),
    "pa": "gurmukhi", "gu": "gujarati", "or": "oriya", "ta": "tamil", "te": "telugu", "kn": "kannada",
    "ml": "malayalam",
}


def script_of(language: str) -> str:
    return SCRIPT_OF_LANGUAGE.get(language, "latin")


def _latin_word(rng: np.random.Generator, language: str, syllables: int) -> str:
    if language.startswith("vi"):
        onsets, nuclei, codas = _VIETNAMESE
        return pick(rng, onsets) + pick(rng, nuclei) + pick(rng, codas)  # Vietnamese words are one syllable
    english = language == "en" or language.startswith("en-")
    onsets, nuclei, codas = _LATIN_BY_LANGUAGE.get(language, (_LATIN_ONSETS, _LATIN_NUCLEI, _LATIN_CODAS) if english
                                                   else (_PLAIN_ONSETS, _PLAIN_NUCLEI, _PLAIN_CODAS))
    return "".join(pick(rng, onsets) + pick(rng, nuclei) + (pick(rng, codas) if i == syllables - 1 else "")
                   for i in range(syllables))


def pseudo_word(rng: np.random.Generator, language: str = "en") -> str:
    """One made-up word of 1-3 syllables that the language's voice reads with its own sounds."""
    syllables = int(rng.integers(1, 4))
    script = script_of(language)
    if script == "latin":
        return _latin_word(rng, language, syllables)
    if script in ("cyrillic", "greek"):
        table = _CYRILLIC if script == "cyrillic" else _GREEK
        latin = "".join(pick(rng, "bdgklmnprstvz" if script == "cyrillic" else "bdgklmnprstz") + pick(rng, "aeiou")
                        for _ in range(syllables))
        word = "".join(table[c] for c in latin)
        return word[:-1] + "ς" if script == "greek" and word.endswith("σ") else word
    if script == "hangul":  # initial x medial (x final, sometimes): a real Hangul syllable block
        return "".join(chr(0xAC00 + (int(rng.integers(19)) * 21 + int(rng.integers(21))) * 28
                           + int(pick(rng, (0, 0, 0, 4, 8, 16, 21)))) for _ in range(syllables))
    mode, consonants, vowels = _script_table()[script]
    if mode == "syllabary":
        return "".join(pick(rng, consonants) for _ in range(syllables + 1))
    if mode == "abugida":
        return "".join(pick(rng, consonants) + (pick(rng, vowels) if rng.random() < 0.7 else "")
                       for _ in range(syllables))
    return "".join(pick(rng, consonants) + pick(rng, vowels) for _ in range(syllables))


def pseudo_text(rng: np.random.Generator, n_words: int, language: str = "en",
                forbidden: Sequence[str] = ()) -> str:
    """n made-up words; none that spells a keyword (checked on Latin letters)."""
    keys = [squash(f) for f in forbidden if squash(f)]
    words: list[str] = []
    while len(words) < max(1, n_words):
        w = pseudo_word(rng, language)
        if not any(k in squash(w) for k in keys):
            words.append(w)
    return " ".join(words)
