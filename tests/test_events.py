"""diffres/events.py: which windows support a label, the rule that makes an event, its bounds, clip scores."""

from __future__ import annotations

import numpy as np
import pytest

from diffres.contract import ModelInfo
from diffres.events import EventRules, EventTracker, locate, locate_last, parse_thresholds

SR, HOP = 1000, 10  # 1 kHz, 10-sample frames: a window of 100 samples is 0.1 s and 10 frames
LABELS = ("a", "b", "c")


def info(background: bool = True, min_score: float = 0.5) -> ModelInfo:
    labels = (*LABELS, "_bg_") if background else LABELS
    return ModelInfo(name="m", labels=labels, sample_rate=SR, delta=0.5, hop_ms=10.0, win_ms=25.0, n_mels=4,
                     clip_seconds=0.1, frontend="t", resolution="diffres", version="1",
                     background_label="_bg_" if background else "", min_score=min_score)


def probs(label: str | None, score: float = 0.9, background: bool = True) -> np.ndarray:
    """A window's softmax: `label` at `score`, the rest spread over the others (None: background wins)."""
    labels = (*LABELS, "_bg_") if background else LABELS
    target = label if label is not None else "_bg_"
    p = np.full(len(labels), (1 - score) / (len(labels) - 1))
    p[labels.index(target)] = score
    return p


def tracker(rules: EventRules, hop: int = 50, **kw: float) -> EventTracker:
    return EventTracker(rules, sample_rate=SR, frame_hop=HOP, hop=hop, **kw)


def run(t: EventTracker, sequence: list[np.ndarray], window: int = 100, hop: int = 50,
        importance: list[np.ndarray] | None = None,
        energy: list[np.ndarray] | None = None) -> list[tuple[str, float, float, float]]:
    events = []
    for i, p in enumerate(sequence):
        events += t.add(i * hop, window, p, None if importance is None else importance[i],
                        None if energy is None else energy[i])
    events += t.finish()
    return [(e.label, e.start_s, e.end_s, e.score) for e in events]


def test_parse_thresholds() -> None:
    assert parse_thresholds("") == {}
    assert parse_thresholds("alexa:0.8, computer:0.6") == {"alexa": 0.8, "computer": 0.6}
    assert parse_thresholds("smart:mirror:0.7") == {"smart:mirror": 0.7}  # the last colon separates
    for bad in ("alexa", "alexa:high", ":0.5"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)


def test_rules_default_to_the_model_min_score_and_take_overrides() -> None:
    rules = EventRules.for_model(info(min_score=0.7))
    assert rules.thresholds == (0.7, 0.7, 0.7, 0.7) and rules.background_index == 3
    rules = EventRules.for_model(info(min_score=0.7), min_score=0.4, per_label={"b": 0.95})
    assert rules.thresholds == (0.4, 0.95, 0.4, 0.4)


@pytest.mark.parametrize("min_score,per_label,needle", [
    (1.5, None, r"within \[0, 1\]"), (None, {"a": -0.1}, r"within \[0, 1\]"),
    (None, {"zzz": 0.5}, "unknown labels"), (None, {"_bg_": 0.5}, "background label")])
def test_rules_refuse_bad_thresholds(min_score: float | None, per_label: dict | None, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        EventRules.for_model(info(), min_score, per_label)


def test_background_never_fires_and_the_most_probable_candidate_wins() -> None:
    rules = EventRules.for_model(info(), min_score=0.3)
    assert rules.firing(probs(None, 0.99)) is None
    assert rules.firing(np.array([0.35, 0.4, 0.05, 0.2])) == 1
    # Per-label: b's bar is too high, so a (above its own) fires although b is more probable.
    rules = EventRules.for_model(info(), min_score=0.3, per_label={"b": 0.9})
    assert rules.firing(np.array([0.35, 0.4, 0.05, 0.2])) == 0
    assert rules.firing(np.array([0.1, 0.2, 0.1, 0.6])) is None  # nothing reaches its threshold


def test_a_label_must_hold_for_event_windows_and_the_event_is_final_then() -> None:
    t = tracker(EventRules.for_model(info()), hold=3)
    assert [t.add(i * 50, 100, probs("a")) for i in range(2)] == [[], []]
    assert t.add(100, 100, probs(None)) == []  # the run broke after 2 windows: no event
    assert [t.add(150 + i * 50, 100, probs("a", 0.8 + i / 100)) for i in range(2)] == [[], []]
    [event] = t.add(250, 100, probs("a", 0.95))  # the third window in a row: the event, at once
    assert (event.label, event.score) == ("a", 0.95)
    assert [t.add(300 + i * 50, 100, probs("a")) for i in range(5)] == [[]] * 5  # the same word: nothing more
    assert t.finish() == []


def test_onset_notices_mark_where_runs_start() -> None:
    t = tracker(EventRules.for_model(info()), hold=2)
    t.add(0, 100, probs(None))
    assert t.onset is None
    t.add(50, 100, probs("b", 0.7))
    assert t.onset is not None and (t.onset.label, t.onset.start_s, t.onset.end_s) == ("b", 0.05, 0.15)
    t.add(100, 100, probs("b"))
    assert t.onset is None  # the run goes on


def test_a_run_open_when_the_audio_ends_makes_its_event() -> None:
    """A stream's last windows, and a clip that runs as one window, cannot hold for more windows."""
    t = tracker(EventRules.for_model(info()), hold=3)
    assert t.add(0, 100, probs(None)) == [] and t.add(50, 100, probs("c", 0.8)) == []
    assert [(e.label, e.score) for e in t.finish()] == [("c", 0.8)]
    whole = tracker(EventRules.for_model(info()), hold=3)
    assert whole.add(0, 700, probs("a")) == []
    assert [e.label for e in whole.finish()] == ["a"]


def test_thresholds_decide_what_is_an_event() -> None:
    seq = [probs("a", 0.6), probs(None), probs("b", 0.9), probs(None)]
    default = run(tracker(EventRules.for_model(info())), seq)
    assert [e[0] for e in default] == ["a", "b"]
    strict = run(tracker(EventRules.for_model(info(), min_score=0.7)), seq)
    assert [e[0] for e in strict] == ["b"]
    per_label = run(tracker(EventRules.for_model(info(), per_label={"b": 0.95})), seq)
    assert [e[0] for e in per_label] == ["a"]


def test_a_model_without_background_fires_on_its_top_label() -> None:
    rules = EventRules.for_model(info(background=False))
    seq = [probs("c", 0.45, background=False), probs("c", 0.55, background=False),
           probs("a", 0.9, background=False)]
    assert [e[0] for e in run(tracker(rules), seq)] == ["c", "a"]


def test_a_run_keeps_one_windows_curves_however_long_it_goes() -> None:
    t = tracker(EventRules.for_model(info()), hold=2)
    for i in range(1000):
        t.add(i * 50, 100, probs("a"), bump(10, 3, 7), bump(10, 3, 7, low=-60, high=-20))
    assert t.run is not None and sum(c.size for c in t.run.curves.values()) == 20


def test_clip_scores_are_best_window_and_least_background() -> None:
    t = tracker(EventRules.for_model(info()))
    run(t, [probs(None, 0.99), probs("b", 0.7), probs(None, 0.9)])
    scores = t.clip_scores()
    assert scores[1] == pytest.approx(0.7) and scores[3] == pytest.approx(0.1)  # b's best, background's least
    assert int(np.argmax(scores)) == 1  # what was detected leads, not the background that fills the clip


def bump(frames: int, start: int, end: int, low: float = 0.3, high: float = 1.0) -> np.ndarray:
    curve = np.full(frames, low)
    curve[start:end] = high
    return curve


def test_locate_finds_the_salient_stretch_bridges_short_gaps_and_gives_up_on_flat_curves() -> None:
    assert locate(bump(100, 40, 60), min_contrast=0.15, max_gap=3) == (40, 60)
    two_syllables = np.maximum(bump(100, 40, 50), bump(100, 52, 60))
    assert locate(two_syllables, min_contrast=0.15, max_gap=3) == (40, 60)
    louder_second = np.maximum(bump(100, 10, 15, high=0.7), bump(100, 60, 80))
    assert locate(louder_second, min_contrast=0.15, max_gap=3) == (60, 80)  # most importance wins
    assert locate(np.full(100, 0.5) + 0.01 * np.sin(np.arange(100)), min_contrast=0.15, max_gap=3) is None


def test_locate_last_takes_the_stretch_reaching_the_end() -> None:
    neighbour_then_word = np.maximum(bump(100, 10, 40), bump(100, 60, 80, high=0.8))
    assert locate(neighbour_then_word, min_contrast=0.15, max_gap=3) == (10, 40)  # the most salient
    assert locate_last(neighbour_then_word, min_contrast=0.15, max_gap=3) == (61, 79)  # the one at the end
    assert locate_last(np.full(100, 0.5), min_contrast=0.15, max_gap=3) is None


def test_an_event_ends_half_a_hop_before_its_first_window_ends_and_starts_where_its_sound_does() -> None:
    """Windows of 1 s (100 frames) every 0.5 s; the run starts on the window at 1 s, so the word ends between
    1.5 and 2 s (estimate 1.75 s); its sound is at frames 40-70 of that window: it starts at 1.4 s."""
    rules = EventRules.for_model(info())
    seq = [probs(None), probs(None), probs("a"), probs("a")]
    flat = np.full(100, 0.5)

    def bounds(importance: list[np.ndarray], energy: list[np.ndarray] | None = None,
               **kw: float) -> tuple[float, float]:
        return run(tracker(rules, hop=500, hold=2, max_gap_s=0.0, **kw), seq, 1000, 500, importance, energy)[0][1:3]

    assert bounds([flat, flat, bump(100, 40, 70), flat]) == (1.4, 1.75)
    # Another voice just before the word, louder, is not the word: the stretch reaching the end is.
    assert bounds([flat, flat, np.maximum(bump(100, 5, 25), bump(100, 45, 70, high=0.8)), flat]) == (1.46, 1.75)
    # Flat importance: the log-mel energy stands in; everything flat: max_word_s before the end.
    energy = [np.full(100, -60.0)] * 2 + [bump(100, 50, 70, low=-60, high=-20), np.full(100, -60.0)]
    assert bounds([flat] * 4, energy) == (1.5, 1.75)
    assert bounds([flat] * 4, max_word_s=0.2) == (1.55, 1.75)


def test_a_run_from_the_audios_first_window_takes_both_bounds_from_its_curve() -> None:
    rules = EventRules.for_model(info())
    seq = [probs("a"), probs("a"), probs(None)]
    found = run(tracker(rules, hop=500, hold=2, max_gap_s=0.0), seq, 1000, 500, [bump(100, 20, 60)] * 3)
    assert found[0][1:3] == (0.2, 0.6)
    assert run(tracker(rules, hold=2), seq)[0][1:3] == (0.0, 0.1)  # no curve: the window's bounds


def test_the_same_word_seen_again_within_the_join_gap_is_one_event() -> None:
    rules = EventRules.for_model(info())
    again = [probs("a"), probs(None), probs("a"), probs(None)]  # a dip inside one word
    assert len(run(tracker(rules), again)) == 1
    apart = [probs("a")] + [probs(None)] * 12 + [probs("a")]  # 0.6 s later: another word
    assert [e[0] for e in run(tracker(rules), apart)] == ["a", "a"]
    assert len(run(tracker(rules, join_gap_s=0.0), again)) == 2


def test_the_onset_search_stops_at_max_word_s_so_speech_right_before_the_word_is_not_its_start() -> None:
    """Other speech running straight into the word makes one salient stretch; the model's max_word_s (chosen
    on validation data) bounds how far before the event's end (1.75 s) its onset may lie."""
    rules = EventRules.for_model(info())
    seq = [probs(None), probs(None), probs("a"), probs("a")]
    flat = np.full(100, 0.5)
    neighbour_into_word = [flat, flat, bump(100, 10, 70), flat]

    def onset(max_word_s: float) -> float:
        t = tracker(rules, hop=500, hold=2, max_gap_s=0.0, max_word_s=max_word_s)
        return run(t, seq, 1000, 500, neighbour_into_word)[0][1]

    assert onset(1.5) == 1.1  # the neighbour's start
    assert onset(0.6) == 1.15  # no further back than 0.6 s before the end


def test_every_door_takes_the_onset_search_from_the_models_metadata() -> None:
    from dataclasses import replace

    from diffres.pipeline import Answer, ClassifyOptions, Pipeline
    from diffres.windows import WindowPlan

    model = replace(info(), window_hop_s=0.05, max_word_s=0.07)
    model.check()
    assert ModelInfo.from_metadata("m", model.to_metadata()).max_word_s == 0.07
    plan = WindowPlan.for_model(model)
    assert Answer(model, plan, ClassifyOptions()).tracker.max_word == 70  # samples at 1 kHz
    assert Pipeline(model, plan).describe().max_word_s == 0.07
    with pytest.raises(ValueError, match="max_word_s"):
        replace(model, max_word_s=0.0).check()
