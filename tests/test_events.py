"""diffres/events.py: which windows fire, merging, thresholds, onset refinement, clip-level scores."""

from __future__ import annotations

import numpy as np
import pytest

from diffres.contract import ModelInfo
from diffres.events import EventRules, EventTracker, locate, parse_thresholds

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


def tracker(rules: EventRules, **kw: float) -> EventTracker:
    return EventTracker(rules, sample_rate=SR, frame_hop=HOP, **kw)


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


def test_consecutive_windows_of_one_label_merge_and_others_split() -> None:
    seq = [probs("a"), probs("a", 0.95), probs(None), probs("a", 0.8), probs("b"), probs("b"), probs(None)]
    events = run(tracker(EventRules.for_model(info()), join_gap_s=0.0), seq)
    assert events == [("a", 0.0, 0.15, 0.95), ("a", 0.15, 0.25, 0.8), ("b", 0.2, 0.35, 0.9)]


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
    assert [e[:3] for e in run(tracker(rules), seq)] == [("c", 0.05, 0.15), ("a", 0.1, 0.2)]


def test_an_endless_run_is_cut_into_bounded_events() -> None:
    t = tracker(EventRules.for_model(info()), max_event_windows=4)
    events = run(t, [probs("a")] * 10)
    assert len(events) == 3 and events[0][1:3] == (0.0, 0.25) and events[1][1] == 0.2


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


def test_importance_refines_onset_and_offset_inside_the_windows_and_energy_stands_in_when_it_is_flat() -> None:
    # Two overlapping windows of 10 frames each (hop 5 frames); the sound is at frames 7-11 overall.
    curves = [bump(11, 7, 11), bump(11, 2, 7)]
    seq = [probs("a"), probs("a")]
    rules = EventRules.for_model(info())
    assert run(tracker(rules), seq)[0][1:3] == (0.0, 0.15)  # no curve: the windows' bounds
    assert run(tracker(rules, max_gap_s=0.0), seq, importance=curves)[0][1:3] == (0.07, 0.12)
    flat = [np.full(11, 0.5)] * 2
    assert run(tracker(rules), seq, importance=flat)[0][1:3] == (0.0, 0.15)  # no contrast says nothing
    energy = [bump(11, 2, 8, low=-60, high=-20), bump(11, 0, 0, low=-60, high=-60)]  # loud at frames 2-8
    assert run(tracker(rules), seq, importance=flat, energy=energy)[0][1:3] == pytest.approx((0.02, 0.08), abs=0.011)
    assert run(tracker(rules, max_gap_s=0.0), seq, importance=curves, energy=energy)[0][1:3] == (0.07, 0.12)


def test_close_runs_of_one_label_join_and_an_event_is_final_once_a_window_starts_after_it() -> None:
    t = tracker(EventRules.for_model(info()), join_gap_s=0.0)
    assert t.add(0, 100, probs("a")) == [] and t.add(50, 100, probs(None)) == []
    # The end-aligned last window overlaps its predecessor: the same word seen again joins its event.
    assert t.add(60, 100, probs("a", 0.7)) == []
    assert [(e.start_s, e.end_s, e.score) for e in t.finish()] == [(0.0, 0.16, 0.9)]
    t = tracker(EventRules.for_model(info()), join_gap_s=0.0)
    t.add(0, 100, probs("a"))
    assert t.add(50, 100, probs(None)) == []  # the event [0, 0.1] may still grow
    assert [e.end_s for e in t.add(100, 100, probs(None))] == [0.1]  # this window starts after it: final
    assert t.finish() == []
    # With the default 0.5 s join gap, an "a" starting 0.4 s after the first one's end joins it; 0.6 s does not.
    near = [probs("a")] + [probs(None)] * 9 + [probs("a")]  # the second starts at 0.5 s
    assert [e[1:3] for e in run(tracker(EventRules.for_model(info())), near)] == [(0.0, 0.6)]
    far = [probs("a")] + [probs(None)] * 11 + [probs("a")]  # at 0.6 s
    assert [e[1:3] for e in run(tracker(EventRules.for_model(info())), far)] == [(0.0, 0.1), (0.6, 0.7)]
