"""The training recipe on a tiny folder: negatives, rooms, word windows, mining, the event rule, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch", reason="training needs the `train` extra")

from diffres.train import calibrate  # noqa: E402
from diffres.train.examples import partial_window, positive_window, word_span, with_context  # noqa: E402
from diffres.train.trainer import main as train_main  # noqa: E402

SR = 8000


def burst(freq: float, seconds: float, at: float, length: float, rng: np.random.Generator) -> np.ndarray:
    """A tone of `length` s at `at` s in quiet noise: a 'word' with silence around it."""
    x = 0.003 * rng.standard_normal(round(seconds * SR)).astype(np.float32)
    t = np.arange(round(length * SR)) / SR
    start = round(at * SR)
    x[start:start + len(t)] += (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("recipe")
    rng = np.random.default_rng(0)
    for label, freq in (("low", 300.0), ("high", 1800.0)):
        (root / "kw" / label).mkdir(parents=True)
        for i in range(12):
            sf.write(root / "kw" / label / f"{i}.wav", burst(freq, 1.2, rng.uniform(0.2, 0.6), 0.35, rng), SR)
    (root / "neg").mkdir()
    for i in range(10):  # other tones: what the background label must learn to reject
        sf.write(root / "neg" / f"{i}.wav", burst(float(rng.uniform(600, 1200)), 2.0, 0.5, 0.8, rng), SR)
    return root / "kw", root / "neg"


def recipe(data: Path, negatives: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--epochs", "1", "--width", "8", "--threads", "1",
            "--clip-seconds", "0.6", "--speed-perturb", "1.0", "--negatives", str(negatives), "--rooms", "1",
            "--partial-share", "0.5", "--context-probability", "0.5", "--long-window-probability", "0.3",
            "--mine-rounds", "1", "--mine-hours", "0.005", "--mine-epochs", "1", "--mine-probability", "0.0",
            "--event-hops", "0.15", "0.3", "--event-windows-max", "2", "--event-latency-s", "0.5"]


def test_word_windows_hold_the_whole_word_and_partials_cut_it() -> None:
    rng = np.random.default_rng(0)
    mel = torch.full((200, 4), 1e-6)
    mel[80:120] = 1.0  # the word: frames 80-120
    assert word_span(mel, 100) == (80, 120)
    for _ in range(20):
        window = positive_window(mel, (80, 120), 60, rng)
        assert window.shape[0] == 60 and float(window.sum()) == pytest.approx(40 * 4)  # all of the word inside
        part = partial_window(mel, (80, 120), 60, rng)
        assert part is not None and 0 < float(part.sum()) < 40 * 4 * 0.85  # some of it only
    sounds = [torch.full((50, 4), 0.5)]
    context, span = with_context(mel, (80, 120), sounds, 100, rng)
    assert float(context[span[0]:span[1]].sum()) == pytest.approx(40 * 4) and context.shape[0] > 40


def test_the_recipe_trains_mines_chooses_an_event_rule_and_repeats_exactly(
        folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibrate, "SCENE_SECONDS", 10.0)
    monkeypatch.setattr(calibrate, "SPEECH_ALONE_MINUTES", 0.3)
    monkeypatch.setattr(calibrate, "NEAR_MISS_ALONE_MINUTES", 0.3)
    data, negatives = folders
    assert train_main(recipe(data, negatives, tmp_path / "a")) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    [mined] = metrics["background"]["mining"]
    assert mined["windows"] > 0 and mined["hard"] > 0  # probability 0: every window is mined
    chosen = metrics["event_rule"]["chosen"]
    assert chosen["window_hop_s"] in (0.15, 0.3) and 1 <= chosen["event_windows"] <= 2
    candidates = metrics["event_rule"]["candidates"]
    assert all(c["latency_s"] <= 0.5 for c in candidates) and {c["window_hop_s"] for c in candidates} == {0.15, 0.3}
    ckpt = torch.load(tmp_path / "a" / "best.pt", weights_only=False)
    assert (ckpt["window_hop_s"], ckpt["event_windows"]) == (chosen["window_hop_s"], chosen["event_windows"])
    assert ckpt["max_word_s"] == chosen["max_word_s"] and chosen["max_word_s"] in calibrate.MAX_WORD_CANDIDATES
    assert set(metrics["event_rule"]["max_word_s_f1"]) == {f"{w:g}" for w in calibrate.MAX_WORD_CANDIDATES}
    # The same command in another process (another hash seed, a fresh import of everything): the same model.
    script = ("import sys; from diffres.train import calibrate; calibrate.SCENE_SECONDS = 10.0; "
              "calibrate.SPEECH_ALONE_MINUTES = 0.3; from diffres.train.trainer import main; "
              "sys.exit(main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", script, *recipe(data, negatives, tmp_path / "b")], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert run.returncode == 0, run.stderr[-2000:]
    again = torch.load(tmp_path / "b" / "best.pt", weights_only=False)
    assert all(torch.equal(ckpt["state_dict"][k], again["state_dict"][k]) for k in ckpt["state_dict"])


def test_another_validation_snr_adds_recordings_and_leaves_the_others_as_they_were(
        folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """calibrate.validation_recordings: a run calibrated at 10 dB, then again with 0 dB added, scores the
    same 10 dB recordings (so the two choices differ only by what was added)."""
    monkeypatch.setattr(calibrate, "SCENE_SECONDS", 10.0)
    monkeypatch.setattr(calibrate, "SPEECH_ALONE_MINUTES", 0.3)
    data, negatives = folders
    clips = [(str(f), f.parent.name) for f in sorted(data.glob("*/*.wav"))]
    speech = sorted(negatives.glob("*.wav"))
    plain = calibrate.validation_recordings(clips, speech, SR, 0)
    more = calibrate.validation_recordings(clips, speech, SR, 0, snrs_db=(10.0, 0.0))
    added = more[len(plain):]
    assert added and not any(alone for _, alone in added)  # keywords in them: scored, not counted as alarms
    assert {scene.condition for scene, _ in added} == {"speech@0dB", "noise@0dB"}
    assert all(a.condition == b.condition and np.array_equal(a.audio, b.audio) and a.events == b.events
               for (a, _), (b, _) in zip(plain, more))


def test_calibrate_chooses_the_rule_again_on_the_same_recordings_and_leaves_the_weights(
        folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`diffres calibrate RUN`: the run's own options give the rule training chose; other options another rule,
    written to best.pt and metrics.json, with the weights untouched."""
    from diffres.cli import main as cli_main
    from diffres.train.recalibrate import calibrate_run

    monkeypatch.setattr(calibrate, "SCENE_SECONDS", 10.0)
    monkeypatch.setattr(calibrate, "SPEECH_ALONE_MINUTES", 0.3)
    data, negatives = folders
    run = tmp_path / "run"
    assert train_main([*recipe(data, negatives, run), "--mine-rounds", "0"]) == 0
    trained = json.loads((run / "metrics.json").read_text())["event_rule"]
    assert trained["snr_db"] == [10.0] and "speech@0dB" not in trained["candidates"][0]
    weights = torch.load(run / "best.pt", weights_only=False)["state_dict"]
    assert calibrate_run(run, {})["chosen"] == trained["chosen"]
    assert cli_main(["calibrate", str(run), "--event-hops", "0.3", "--event-windows-max", "1",
                     "--event-snr-db", "10", "0"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    chosen, candidates = metrics["event_rule"]["chosen"], metrics["event_rule"]["candidates"]
    assert (chosen["window_hop_s"], chosen["event_windows"]) == (0.3, 1) and metrics["event_rule"]["snr_db"] == [10, 0]
    assert {"speech@0dB", "noise@0dB"} <= set(candidates[0]) and metrics["calibrate_command"].startswith(
        "diffres calibrate ")
    ckpt = torch.load(run / "best.pt", weights_only=False)
    assert (ckpt["window_hop_s"], ckpt["event_windows"], ckpt["min_score"]) == (0.3, 1, chosen["min_score"])
    assert ckpt["train_config"]["event_hops"] == (0.3,) and ckpt["train_config"]["event_snr_db"] == (10.0, 0.0)
    assert all(torch.equal(weights[k], ckpt["state_dict"][k]) for k in weights)


def given_tallies(monkeypatch: pytest.MonkeyPatch, thresholds: tuple[float, ...], tally: object
                  ) -> tuple[object, list[tuple[object, bool]]]:
    """calibrate.choose_event_rule's model info and one recording, with the model never run: its windows are
    empty and `tally` gives the counts of each candidate rule."""
    from diffres.contract import ModelInfo
    from diffres.train.scenes import Scene

    monkeypatch.setattr(calibrate, "RULE_THRESHOLDS", thresholds)
    monkeypatch.setattr(calibrate.event_eval, "classify", lambda *_: [])
    monkeypatch.setattr(calibrate.event_eval, "tally", tally)
    info = ModelInfo(name="m", labels=("a", "_bg_"), sample_rate=16000, delta=0.5, hop_ms=10.0, win_ms=25.0,
                     n_mels=4, clip_seconds=1.0, frontend="t", resolution="diffres", version="1",
                     background_label="_bg_", min_score=0.5)
    return info, [(Scene("keywords", np.zeros(16000, np.float32)), False)]


def test_near_misses_are_held_to_their_own_bound_not_the_speech_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule choice with near-miss phrases (calibrate.choose_event_rule): they never count against the
    speech bound; with a bound of their own they rule out a rule, without one they only break ties."""
    from diffres.train.event_eval import Tally

    # Two thresholds: 0.5 finds more keywords but fires on near misses 50 times an hour, 0.9 five times;
    # neither fires on the speech alone. The model never runs: its windows and tallies are given.
    figures = {0.5: (90, 50), 0.9: (60, 5)}  # threshold: (keywords found of 100, near-miss alarms in 1 h)

    def tally(classified: object, pipeline: object, options: object, **_: object) -> dict[str, Tally]:
        found, near = figures[options.min_score]  # type: ignore[attr-defined]
        counts = {"keywords": Tally(tp=found, fn=100 - found), calibrate.ALONE: Tally(background_s=3600.0),
                  calibrate.NEAR_MISS_ALONE: Tally(false_alarms=near, background_s=3600.0)}
        return {**counts, "all": Tally(tp=found, fn=100 - found, false_alarms=near, background_s=7200.0)}

    info, recordings = given_tallies(monkeypatch, tuple(figures), tally)

    def chosen(near_miss_per_hour: float | None) -> float:
        rule, choice = calibrate.choose_event_rule(None, info, recordings, (0.5,), 1, 1.0, 2.0, near_miss_per_hour)
        assert choice["near_miss_false_alarms_per_hour_goal"] == near_miss_per_hour
        return rule.min_score

    assert chosen(None) == 0.5  # the better F1: near misses do not count as other speech
    assert chosen(10.0) == 0.9  # 50 an hour is over the bound, 5 is within
    assert chosen(1.0) == 0.9  # no rule within: the fewest false alarms


def test_the_onset_search_is_the_one_with_the_best_f1_for_the_kept_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """calibrate.choose_event_rule, then its max_word_s: scored on the kept rule's windows (ties: the longer)."""
    from diffres.train.event_eval import Tally

    found = {0.6: 70, 0.8: 85, 1.0: 85, 1.2: 80, 1.5: 75}  # keywords found of 100, by max_word_s

    def tally(classified: object, pipeline: object, options: object, **_: object) -> dict[str, Tally]:
        hits = found[pipeline.plan.max_word_s]  # type: ignore[attr-defined]
        return {"keywords": Tally(tp=hits, fn=100 - hits), calibrate.ALONE: Tally(background_s=3600.0),
                "all": Tally(tp=hits, fn=100 - hits, background_s=3600.0)}

    info, recordings = given_tallies(monkeypatch, (0.8,), tally)
    rule, choice = calibrate.choose_event_rule(None, info, recordings, (0.5,), 1, 1.0, 2.0)
    assert (rule.min_score, rule.max_word_s) == (0.8, 1.0)  # 0.8 and 1.0 tie: the longer
    assert choice["chosen"]["max_word_s"] == 1.0 and choice["max_word_s_f1"]["0.6"] == round(140 / 170, 4)
