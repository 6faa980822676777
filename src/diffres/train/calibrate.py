"""What training chooses on validation data and the exported model carries: the event rule.

The rule is min_score, window_hop_s, event_windows and max_word_s (diffres/events.py). Validation keyword clips
are placed in recordings (diffres.train.scenes) among held-out speech and in noise, at each of the run's
`event_snr_db` (10 dB unless asked), and next to speech, plus recordings of held-out speech alone and, when
the negatives have them, of held-out near-miss phrases alone; the model runs them through the pipeline
the service runs (TorchRunner), once per candidate hop, and every candidate rule replays those windows
(event_eval). Kept: the best F1 among
the rules whose false alarms on the speech alone stay within `false_alarms_per_hour`, and on the near
misses within `near_miss_per_hour` when one is given, and whose expected delay from a word's end to its
event (half a hop, plus the windows after the first) stays within `latency_s`; ties go to fewer false
alarms (near misses included), then to the coarser hop (less work). When no rule keeps the false
alarms down, the one with the fewest wins. Near misses are kept apart from the speech: phrases made
to sound like a keyword, counted as other speech, would set the threshold for all speech. Then the
kept rule's onset search, max_word_s: the one of MAX_WORD_CANDIDATES with the best F1 on the same
windows (ties: the longer). Too long and an onset slides onto speech just before the word; too short
and it cuts the word; a match needs the onset within the scoring collar, so F1 measures both.

Without recordings (no negatives of speech), min_score is the lowest threshold (0.30, 0.35, ... 0.95)
at which at most 1% of the background validation windows score that high on any keyword, and the
rule is half-window hops, one window and the default onset search (contract.MAX_WORD_S).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffres.contract import MAX_WORD_S, ModelInfo
from diffres.pipeline import ClassifyOptions, Pipeline
from diffres.train import event_eval, scenes
from diffres.train.background import NegativeFiles
from diffres.train.config import TrainConfig
from diffres.train.requires import torch  # the `train` extra, or an error naming it
from diffres.train.torch_runner import TorchRunner
from diffres.windows import WindowPlan

FALSE_ACCEPT_GOAL = 0.01
THRESHOLDS = np.arange(0.3, 0.96, 0.05)
RULE_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)
MAX_WORD_CANDIDATES = (0.6, 0.8, 1.0, 1.2, MAX_WORD_S)  # seconds
SCENE_SECONDS = 60.0
SPEECH_ALONE_MINUTES = 60.0
NEAR_MISS_ALONE_MINUTES = 20.0
ALONE = "speech alone"
NEAR_MISS_ALONE = "near misses alone"


def choose_min_score(probs: torch.Tensor, y: torch.Tensor, background: int | None) -> float:
    """The default event threshold: the lowest whose background false-accept rate on validation is <= 1%.

    Without a background label (or background validation data) there is nothing to calibrate against: 0.5.
    """
    if background is None or not (y == background).any():
        return 0.5
    keyword = probs.clone()
    keyword[:, background] = -1.0
    score, _ = keyword.max(1)
    is_bg = y == background
    for threshold in THRESHOLDS:
        if (score[is_bg] >= threshold).float().mean().item() <= FALSE_ACCEPT_GOAL:
            return round(float(threshold), 2)
    return 0.95


@dataclass(frozen=True)
class EventRule:
    window_hop_s: float
    event_windows: int
    min_score: float
    max_word_s: float = MAX_WORD_S

    def latency_s(self) -> float:
        """Expected delay from a word's end to its event: half a hop, then the windows after the first."""
        return self.window_hop_s / 2 + (self.event_windows - 1) * self.window_hop_s


def validation_recordings(clips: list[tuple[str, str]], speech: list[Path], sr: int, seed: int,
                          near_miss: list[Path] | None = None, snrs_db: tuple[float, ...] = (10.0,)
                          ) -> list[tuple[scenes.Scene, bool]]:
    """Validation keywords among held-out speech and in noise at each of `snrs_db`, and next to speech; speech
    alone; near-miss phrases alone (when given). The first SNR's recordings come first and the others' last, so
    adding an SNR leaves every other recording as it was."""
    rng = np.random.default_rng(seed)
    keywords = [scenes.keyword(path, label, sr) for path, label in clips]
    first, *more = snrs_db
    built = [(s, False) for s in scenes.scenes(keywords, "speech", first, SCENE_SECONDS, sr, rng, speech)]
    built += [(s, False) for s in scenes.adjacent_scenes(keywords, SCENE_SECONDS, sr, rng, speech)]
    built += [(s, False) for s in scenes.scenes(keywords, "noise", first, SCENE_SECONDS, sr, rng, speech)]
    built += [(s, True) for s in scenes.background_only("speech", first, SPEECH_ALONE_MINUTES, SCENE_SECONDS, sr,
                                                          rng, speech, name=ALONE)]
    if near_miss:
        built += [(s, True) for s in scenes.background_only("speech", first, NEAR_MISS_ALONE_MINUTES, SCENE_SECONDS,
                                                              sr, rng, near_miss, name=NEAR_MISS_ALONE)]
    for snr_db in more:
        for kind in ("speech", "noise"):
            built += [(s, False) for s in scenes.scenes(keywords, kind, snr_db, SCENE_SECONDS, sr, rng, speech)]
    return built


def rule_for_run(model: Any, info: ModelInfo, tcfg: TrainConfig, clips: list[tuple[str, str]],
                 negatives: NegativeFiles) -> tuple[EventRule, dict[str, Any]] | None:
    """The event rule of a trained model by its run's event options, on its validation recordings; None when
    the run asks for none (no `event_hops`, or no held-out speech among its negatives)."""
    speech = negatives.val_speech
    if not tcfg.event_hops or not speech:
        return None
    recordings = validation_recordings(clips, [Path(f) for f in speech], info.sample_rate, tcfg.seed,
                                       [Path(f) for f in negatives.val_near_miss], tuple(tcfg.event_snr_db))
    rule, choice = choose_event_rule(model, info, recordings, tuple(tcfg.event_hops), tcfg.event_windows_max,
                                     tcfg.event_latency_s, tcfg.event_false_alarms_per_hour,
                                     tcfg.event_near_miss_per_hour)
    return rule, {**choice, "snr_db": list(tcfg.event_snr_db)}


def choose_event_rule(model: Any, info: ModelInfo, recordings: list[tuple[scenes.Scene, bool]], hops: tuple[float, ...],
                      max_windows: int, latency_s: float, false_alarms_per_hour: float,
                      near_miss_per_hour: float | None = None) -> tuple[EventRule, dict[str, Any]]:
    """The best rule on the recordings (the module docstring says how), and every candidate's figures."""
    candidates: list[tuple[tuple[bool, float, int, float], EventRule, dict[str, Any]]] = []
    searches: dict[float, dict[float, float]] = {}  # per hop: its best rule's F1 at each max_word_s
    for hop in hops:
        hop_info = replace(info, window_hop_s=hop, event_windows=1)
        pipeline = Pipeline(hop_info, WindowPlan.for_model(hop_info))
        runner = TorchRunner(model, hop_info.backbone_hop)
        classified = [(scene, event_eval.classify(pipeline, runner, scene.audio), alone) for scene, alone in recordings]
        for windows in range(1, max_windows + 1):
            for threshold in RULE_THRESHOLDS:
                rule = EventRule(hop, windows, threshold)
                if rule.latency_s() > latency_s + 1e-9:
                    continue
                counts = event_eval.tally(classified, pipeline, ClassifyOptions(min_score=threshold),
                                          event_windows=windows)
                total, per_hour = counts["all"], counts[ALONE].false_alarms_per_hour
                near = counts.get(NEAR_MISS_ALONE)  # present when the negatives have near misses
                near_per_hour = near.false_alarms_per_hour if near is not None else None
                within = (per_hour is not None and per_hour <= false_alarms_per_hour
                          and (near_miss_per_hour is None or near_per_hour is None
                               or near_per_hour <= near_miss_per_hour))
                figures = {"window_hop_s": hop, "event_windows": windows, "min_score": threshold,
                           "latency_s": round(rule.latency_s(), 3), **{name: t.summary() for name, t in counts.items()}}
                candidates.append(((within, total.f1 if within else -total.false_alarms, -total.false_alarms, hop),
                                   rule, figures))
        of_hop = [c for c in candidates if c[1].window_hop_s == hop]
        if of_hop:
            searches[hop] = onset_searches(classified, pipeline, max(of_hop, key=lambda c: c[0])[1])
    if not candidates:
        raise ValueError(f"no event rule of hops {hops} meets the {latency_s} s latency")
    _, best, _ = max(candidates, key=lambda c: c[0])
    f1_by_word = searches[best.window_hop_s]
    best = replace(best, max_word_s=max(f1_by_word, key=lambda w: (f1_by_word[w], w)))
    return best, {"chosen": {"window_hop_s": best.window_hop_s, "event_windows": best.event_windows,
                             "min_score": best.min_score, "max_word_s": best.max_word_s},
                  "false_alarms_per_hour_goal": false_alarms_per_hour,
                  "near_miss_false_alarms_per_hour_goal": near_miss_per_hour,
                  "max_word_s_f1": {f"{w:g}": round(f1, 4) for w, f1 in f1_by_word.items()},
                  "candidates": [figures for _, _, figures in candidates]}


def onset_searches(classified: event_eval.Classified, pipeline: Pipeline, rule: EventRule) -> dict[float, float]:
    """F1 of `rule` with each of MAX_WORD_CANDIDATES as its onset search, on the same windows."""
    f1 = {}
    for max_word_s in MAX_WORD_CANDIDATES:
        searched = Pipeline(pipeline.info, replace(pipeline.plan, max_word_s=max_word_s))
        counts = event_eval.tally(classified, searched, ClassifyOptions(min_score=rule.min_score),
                                  event_windows=rule.event_windows)
        f1[max_word_s] = counts["all"].f1
    return f1
