"""diffres.train.synth: offline synthetic speech (negatives, near misses, positives) from Debian's TTS engines.

Fast: a tiny generation (a few utterances, espeak-ng only, a small given text bank) made twice and
compared sample for sample, and unit tests of the split, the near-miss generator, rooms and noise.
Engine-dependent tests skip, saying which package to install, when the engine is missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from diffres.train.synth import (
    CURATED,
    RirBank,
    SynthConfig,
    TextBank,
    Voice,
    augment,
    generate,
    inventory,
    keyword_phrase,
    keywords_from,
    load_clip,
    measured_snr_db,
    mix_noise,
    near_misses,
    random_room,
    read_manifest,
    reverberate,
    split_phrases,
    synth_files,
    voice_split,
)
from diffres.train.synth.__main__ import main as synth_main
from diffres.train.synth.build import Planner
from diffres.train.synth.texts import pseudo_word, squash
from diffres.train.synth.voices import Prosody, sample_voice, speak

HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
try:
    import pyroomacoustics  # noqa: F401
    HAS_ROOMS = True
except ModuleNotFoundError:
    HAS_ROOMS = False
needs_rooms = pytest.mark.skipif(not HAS_ROOMS, reason="pyroomacoustics is not installed (the `train` extra)")

KEYWORD = "zorblat_lamp"  # made up: the automatic near-miss generator, not the curated lists
TEXT = """The quick brown fox jumps over the lazy dog near the river bank. A small boat drifted slowly
towards the old harbour in the evening light. Many people gathered in the square to hear the music.
She opened the window and looked at the garden full of flowers. The train arrived late because of the
storm that had blown across the valley. We should finish the report before the meeting on Thursday.
Nobody expected the bridge to be closed for repairs this week. The children laughed as the kite rose
higher into the bright blue sky."""


def tiny_config(out: Path, **overrides: object) -> SynthConfig:
    values: dict[str, object] = {
        "out": str(out), "hours": 0.003, "eval_hours": 0.002, "keywords": (KEYWORD,), "near_misses": 3,
        "eval_near_misses": 2, "positives": 2, "eval_positives": 1, "near_miss_phrases": 8, "engines": ("espeak",),
        "workers": 1, "quiet": True, "rooms": HAS_ROOMS, "texts": str(out.parent / "texts.json")}
    values.update(overrides)
    return SynthConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny generation, twice, into two fresh folders."""
    if not HAS_ESPEAK:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("synth")
    TextBank.from_text(TEXT).save(root / "texts.json")
    a, b = root / "a", root / "b"
    generate(tiny_config(a))
    generate(tiny_config(b))
    return a, b


def flac_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.flac"))


def test_tiny_generation_is_reproducible(tiny: tuple[Path, Path]) -> None:
    a, b = tiny
    files = flac_files(a)
    assert files and files == flac_files(b)
    for name in files:
        x, _ = sf.read(a / name, dtype="int16")
        y, _ = sf.read(b / name, dtype="int16")
        np.testing.assert_array_equal(x, y, err_msg=name)
        assert (a / name).read_bytes() == (b / name).read_bytes(), name  # byte-identical FLAC too
    assert read_manifest(a)["files"] == read_manifest(b)["files"]
    assert read_manifest(a)["cache_key"] == read_manifest(b)["cache_key"]


def test_manifest_matches_files(tiny: tuple[Path, Path]) -> None:
    out = tiny[0]
    manifest = read_manifest(out)
    entries = manifest["files"]
    assert flac_files(out) == sorted(e["file"] for e in entries)
    for e in entries:
        info = sf.info(out / e["file"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert e["seconds"] == pytest.approx(info.frames / 16000, abs=1e-3)
        assert e["file"].startswith(f"{e['split']}/{e['kind']}/")
        with sf.SoundFile(out / e["file"]) as f:
            assert f.comment == e["spec_hash"]  # what re-runs compare to reuse a file
        for field in ("engine", "voice", "language", "text", "rate", "pitch", "room", "noise", "split"):
            assert field in e
    kinds = {(e["split"], e["kind"]) for e in entries}
    assert kinds == {(s, k) for s in ("train", "eval") for k in ("negative", "near_miss", "positive")}
    assert sum(e["seconds"] for e in entries if e["split"] == "train" and e["kind"] == "negative") >= 0.003 * 3600
    assert synth_files(out, "train", "positive", KEYWORD) == [out / e["file"] for e in entries
                                                              if e["kind"] == "positive" and e["split"] == "train"]
    clip = load_clip(synth_files(out, "eval", "negative")[0], 8000)
    assert clip.dtype == np.float32 and clip.ndim == 1 and len(clip) > 0


def test_negatives_tell_near_misses_apart_for_the_event_rule(tiny: tuple[Path, Path]) -> None:
    """A synth folder as negatives: its training split only, near-miss phrases known as such in both halves,
    so the calibration can hold them to their own bound (diffres.train.calibrate)."""
    from diffres.train.background import negative_files

    out = tiny[0]
    files = negative_files([str(out)], seed=0, holdout_speaker=None)
    near = {str(f) for f in synth_files(out, "train", "near_miss")}
    assert near and files.near_miss == near
    assert sorted(files.train + files.val) == sorted({str(f) for k in ("negative", "near_miss")
                                                      for f in synth_files(out, "train", k)})
    assert set(files.val_speech) | set(files.val_near_miss) == set(files.val)
    assert not set(files.val_speech) & near and set(files.val_near_miss) <= near


def test_eval_voices_and_languages_never_in_train(tiny: tuple[Path, Path]) -> None:
    manifest = read_manifest(tiny[0])
    split = manifest["split"]
    train = [e for e in manifest["files"] if e["split"] == "train"]
    evaluation = [e for e in manifest["files"] if e["split"] == "eval"]
    assert {e["voice"] for e in train}.isdisjoint(e["voice"] for e in evaluation)
    for e in train:
        assert e["language"] not in split["eval_languages"] and e["variant"] not in split["eval_variants"]
        assert e["speaker"] not in split["eval_speakers"]
    for e in evaluation:
        assert (e["language"] in split["eval_languages"] or e["variant"] in split["eval_variants"]
                or e["speaker"] in split["eval_speakers"])
    phrases = manifest["near_miss_phrases"][KEYWORD]
    assert phrases["train"] and phrases["eval"] and set(phrases["train"]).isdisjoint(phrases["eval"])
    assert {e["phrase"] for e in train if e["kind"] == "near_miss"} <= set(phrases["train"])
    assert {e["phrase"] for e in evaluation if e["kind"] == "near_miss"} <= set(phrases["eval"])


def test_negatives_never_say_the_keyword(tiny: tuple[Path, Path]) -> None:
    for e in read_manifest(tiny[0])["files"]:
        if e["kind"] == "negative":
            assert squash(keyword_phrase(KEYWORD)) not in squash(e["text"])
        if e["kind"] == "positive":
            assert e["text"].rstrip(".!?,") == "zorblat lamp"


def test_rerun_reuses_and_repairs(tiny: tuple[Path, Path]) -> None:
    out = tiny[1]
    before = {name: (out / name).stat().st_mtime_ns for name in flac_files(out)}
    generate(tiny_config(out))  # same arguments: nothing rendered
    assert {name: (out / name).stat().st_mtime_ns for name in flac_files(out)} == before
    victim = next(iter(before))
    original = (out / victim).read_bytes()
    (out / victim).unlink()
    generate(tiny_config(out))  # the missing file comes back, the same bytes; the others are untouched
    assert (out / victim).read_bytes() == original
    assert {n: (out / n).stat().st_mtime_ns for n in flac_files(out) if n != victim} == \
        {n: t for n, t in before.items() if n != victim}


@needs_espeak
def test_split_is_fixed_by_seed_and_keeps_english_for_training() -> None:
    inv = inventory(("espeak",))
    split = voice_split(inv, 0)
    assert split == voice_split(inv, 0)
    assert split != voice_split(inv, 1)
    assert split.eval_languages and split.eval_variants
    assert not {"en-us", "en-gb"} & split.eval_languages and "" not in split.eval_variants
    assert any(lang.startswith("en-") for lang in split.eval_languages)  # an English accent held out
    rng = np.random.default_rng(0)
    for evaluation in (False, True):
        for english in (False, True):
            for _ in range(50):
                voice = sample_voice(rng, inv, split, evaluation, english)
                assert voice is not None and split.is_eval(voice) == evaluation and voice.english == english


@needs_espeak
def test_no_rooms_changes_only_the_rooms(tmp_path: Path) -> None:
    bank = TextBank.from_text(TEXT)
    inv = inventory(("espeak",))
    plans = []
    for rooms in (True, False):
        planner = Planner(tiny_config(tmp_path, rooms=rooms), inv, voice_split(inv, 0), bank)
        plans.append([planner.negative("train", i) for i in range(12)])
    with_rooms, dry = plans
    assert any(s["room"] for s in with_rooms) and not any(s["room"] for s in dry)
    for a, b in zip(with_rooms, dry):
        assert {k: v for k, v in a.items() if k not in ("room", "spec_hash")} == \
            {k: v for k, v in b.items() if k not in ("room", "spec_hash")}


def test_near_misses_for_a_made_up_keyword() -> None:
    vocabulary = ["lamb", "lamp", "camp", "damp", "lump", "zebra", "blot", "orbit", "table", "lampoon"]
    misses = near_misses(KEYWORD, vocabulary, count=30, phonemes=False)
    assert len(misses) == 30 and len(set(misses)) == 30
    assert all(squash(m) != "zorblatlamp" and "zorblatlamp" not in squash(m) for m in misses)
    assert all(len(set(squash(m)) & set("zorblatlamp")) >= 3 for m in misses)  # close to it, not random
    assert any(m.startswith("zorblat ") and m != "zorblat lamp" for m in misses)  # the other word changed
    assert any(" lamp" in m and not m.startswith("zorblat ") for m in misses)  # the first word changed
    train, held = split_phrases(misses, KEYWORD, 0)
    assert train and held and not set(train) & set(held)
    assert near_misses(KEYWORD, vocabulary, count=30, phonemes=False) == misses  # a fixed order


@needs_espeak
def test_near_misses_drop_homophones_and_the_keyword() -> None:
    for label, words in CURATED.items():
        assert squash(keyword_phrase(label)) not in {squash(w) for w in words}
    misses = near_misses("snowboy", ["snowball", "snowboard", "cowboy"], count=60)
    assert misses[: len(CURATED["snowboy"])] == list(CURATED["snowboy"])
    assert "snow boy" not in misses and "snowboys" not in misses  # sound like the keyword
    assert "jarvis" not in near_misses("jarvis", ["harvest", "service"], count=60)


def test_pseudo_words_use_the_language_script() -> None:
    rng = np.random.default_rng(0)
    assert all("\u0400" <= c <= "\u04ff" for c in pseudo_word(rng, "ru"))
    assert all("\uac00" <= c <= "\ud7a3" for c in pseudo_word(rng, "ko"))
    assert all("\u0900" <= c <= "\u097f" for c in pseudo_word(rng, "hi"))
    assert pseudo_word(rng, "de").isascii()


@needs_rooms
def test_reverberation_keeps_length_alignment_and_level() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros(16000, np.float32)
    x[4000] = 1.0  # a click: its reverberant copy must start at the same sample
    x += 0.01 * rng.standard_normal(16000).astype(np.float32)
    y = reverberate(x, 16000, rng)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-4)
    assert abs(int(np.argmax(np.abs(y))) - 4000) <= 2
    short = random_room(np.random.default_rng(1), (0.1, 0.1))  # a short RT60 needs a small room
    assert short.rt60 == 0.1 and 0 < short.absorption <= 1
    np.testing.assert_array_equal(reverberate(x, 16000, rng, short), reverberate(x, 16000, rng, short))
    bank = RirBank(2, 16000, seed=0)
    z = augment(x, 16000, np.random.default_rng(2), room_probability=1.0, noise_probability=1.0, rirs=bank)
    assert z.shape == x.shape and np.max(np.abs(z)) <= 0.99 + 1e-6


@pytest.mark.parametrize("color", ["white", "pink", "brown", None])
@pytest.mark.parametrize("snr", [0.0, 12.5, 30.0])
def test_mix_noise_hits_the_snr(color: str | None, snr: float) -> None:
    x = np.sin(np.arange(8000, dtype=np.float32) * 0.05) * 0.3
    y = mix_noise(x, snr, np.random.default_rng(3), color)
    assert y.shape == x.shape and y.dtype == np.float32
    assert measured_snr_db(x, y - x) == pytest.approx(snr, abs=1e-3)
    np.testing.assert_array_equal(y, mix_noise(x, snr, np.random.default_rng(3), color))
    np.testing.assert_array_equal(mix_noise(np.zeros(100, np.float32), snr, np.random.default_rng(0)), 0.0)


@pytest.mark.parametrize("engine,voice", [("espeak", Voice("espeak", "en-us+m3", "en-us", "espeak-m3", "m3")),
                                          ("flite", Voice("flite", "slt", "en-us", "slt")),
                                          ("festival", Voice("festival", "kal_diphone", "en", "kal"))])
def test_engines_are_deterministic(engine: str, voice: Voice, tmp_path: Path) -> None:
    command = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}[engine]
    if shutil.which(command) is None:
        pytest.skip(f"{command} is not installed (apt-get install {'espeak-ng' if engine == 'espeak' else engine})")
    if engine == "festival" and not any(v.id == voice.id for v in inventory(("festival",)).voices):
        pytest.skip("festival's kal_diphone voice is not installed (apt-get install festvox-kallpc16k)")
    prosody = Prosody(160, 40) if engine == "espeak" else Prosody(1.1, 120.0 if engine == "flite" else None)
    first, rate = speak(voice, "A quiet voice reads this line twice.", prosody, tmp_path)
    second, rate2 = speak(voice, "A quiet voice reads this line twice.", prosody, tmp_path)
    assert rate == rate2 and len(first) > rate // 2
    np.testing.assert_array_equal(first, second)


def test_keywords_from_a_folder(tmp_path: Path) -> None:
    for name in ("alexa", "smart_mirror", "_background_"):
        (tmp_path / name).mkdir()
    assert keywords_from(tmp_path) == ["alexa", "smart_mirror"]


def test_cli_shows_near_misses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    TextBank.from_text(TEXT).save(tmp_path / "texts.json")
    assert synth_main(["--show-near-misses", "--keywords", "alexa", "--texts", str(tmp_path / "texts.json")]) == 0
    shown = json.loads(capsys.readouterr().out)["alexa"]
    assert "alexander" in shown["train"] + shown["eval"] and "alexa" not in shown["train"] + shown["eval"]
