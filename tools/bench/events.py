"""Event quality on long recordings: `python -m tools.bench.events` (`make eval-events`).

Builds recordings from the model's validation keyword clips placed at random times in background
(tools/bench/event_scenes.py: coloured noise at several SNRs, and speech of a digits speaker the model
never heard), runs them through the pipeline the service runs (diffres.pipeline, a session runner),
and scores the events: event-based precision, recall and F1 with a 0.5 s onset collar (same label,
onset within 0.5 s, each reference matched at most once, closest first), and false alarms per hour
of background-only audio. Onset/offset methods are compared by replaying the same windows through
the pipeline's `Answer` with outputs left out: "service" (all of them: DiffRes importance, the
log-mel energy when importance is flat), "importance" and "energy" alone, and "window" (neither:
the merged windows' bounds); the threshold sweep replays them at other thresholds. Writes reports/EVENTS.md
and reports/events.json, and optionally streams one recording in real time to a real server for
the latency from a keyword's end to its event.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from diffres.errors import DiffresError
from diffres.models import MODELS_DIR
from diffres.pipeline import Answer, ClassifyOptions, Pipeline, WindowStep
from diffres.runner import OnnxModel, SessionRunner
from diffres.schemas import Event
from diffres.windows import WindowPlan
from tools.bench import event_scenes as scenes
from tools.bench.event_stream import latencies, stream_scene

CONDITIONS = (("noise", 30.0), ("noise", 10.0), ("noise", 0.0), ("speech", 10.0), ("speech", 0.0))
COLLAR_S = 0.5
METHODS = ("service", "importance", "energy", "window")  # service: importance, its energy when flat
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
GOAL_F1, GOAL_FA_PER_HOUR = 0.9, 2.0


# What each method leaves out of a window's outputs before its events are located.
ABLATIONS: dict[str, dict[str, None]] = {"service": {}, "importance": {"logmel": None}, "energy": {"importance": None},
                                         "window": {"importance": None, "logmel": None}}


def classify(pipeline: Pipeline, runner: SessionRunner, audio: np.ndarray) -> list[WindowStep]:
    """The pipeline's windows of a recording (longer than the long-audio threshold: windowed as uploads are)."""
    if not pipeline.plan.is_long(len(audio)):
        raise DiffresError("recordings must be longer than the model's long-audio threshold (--seconds)")
    live = pipeline.live(runner, ClassifyOptions(), pcm_format="f32le")
    steps = live.push(audio.astype("<f4").tobytes())
    tail, _ = live.end()
    return steps + tail


def detect(steps: list[WindowStep], pipeline: Pipeline, options: ClassifyOptions, method: str) -> list[Event]:
    """The recording's events at `options`' thresholds, with the bounds of `method`."""
    answer = Answer(pipeline.info, pipeline.plan, options, keep_segments=False)
    events = []
    for step in steps:
        events += answer.add(step.start, step.length, replace(step.output, **ABLATIONS[method])).events
    return events + answer.finish()


def match(reference: list[tuple[str, float, float]], found: list[Event]) -> list[tuple[int, int]]:
    """(reference, found) pairs: same label, onsets within the collar, closest pairs first, one-to-one."""
    pairs = sorted((abs(r[1] - e.start_s), i, j) for i, r in enumerate(reference) for j, e in enumerate(found)
                   if r[0] == e.label and abs(r[1] - e.start_s) <= COLLAR_S)
    used_r, used_f, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_r and j not in used_f:
            used_r.add(i)
            used_f.add(j)
            out.append((i, j))
    return out


def score(counts: dict[str, Any]) -> dict[str, Any]:
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    onset, offset = counts.pop("onset_err", []), counts.pop("offset_err", [])
    hours = counts.get("background_s", 0.0) / 3600
    return {**counts, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "onset_abs_err_median_s": round(float(np.median(onset)), 3) if onset else None,
            "offset_abs_err_median_s": round(float(np.median(offset)), 3) if offset else None,
            "false_alarms_per_hour": round(counts.get("false_alarms", 0) / hours, 2) if hours else None}


def evaluate(classified: dict[str, list[tuple[scenes.Scene, list[WindowStep]]]], pipeline: Pipeline,
             options: ClassifyOptions, method: str) -> dict[str, Any]:
    """Counts and scores per condition and overall for one method and one set of thresholds."""
    sr = pipeline.info.sample_rate
    per: dict[str, dict[str, Any]] = {}
    for part, items in classified.items():
        for scene, windows in items:
            c = per.setdefault(scene.condition, {"tp": 0, "fp": 0, "fn": 0, "false_alarms": 0, "background_s": 0.0,
                                                 "onset_err": [], "offset_err": []})
            found = detect(windows, pipeline, options, method)
            if part == "background":
                c["false_alarms"] += len(found)
                c["background_s"] += len(scene.audio) / sr
                continue
            pairs = match(scene.events, found)
            c["tp"] += len(pairs)
            c["fp"] += len(found) - len(pairs)
            c["fn"] += len(scene.events) - len(pairs)
            c["onset_err"] += [abs(scene.events[i][1] - found[j].start_s) for i, j in pairs]
            c["offset_err"] += [abs(scene.events[i][2] - found[j].end_s) for i, j in pairs]
    total: dict[str, Any] = {"tp": 0, "fp": 0, "fn": 0, "false_alarms": 0, "background_s": 0.0,
                             "onset_err": [], "offset_err": []}
    for c in per.values():
        for k in total:
            total[k] += c[k]
    return {**{k: score(v) for k, v in per.items()}, "all": score(total)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=MODELS_DIR / "keywords.onnx")
    p.add_argument("--data", type=Path, default=Path("../shared/data/keywords"), help="the model's training data")
    p.add_argument("--speech", type=Path, default=Path("../shared/data/digits"), help="other speech (digits)")
    p.add_argument("--speaker", default=None, help="digits speaker for the speech background; default: the one "
                   "the model's background training held out (export report), else 'george'")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    p.add_argument("--background-minutes", type=float, default=12.0, help="background-only audio per condition")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="stream one recording in real time to a real server for latency")
    p.add_argument("--out", type=Path, default=Path("reports"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    model = OnnxModel.load(args.model, intra_op_threads=args.threads)
    info = model.info
    pipeline, runner = Pipeline(info, WindowPlan.for_model(info)), SessionRunner(model)
    sr, export_json = info.sample_rate, args.model.with_suffix(".export.json")
    clips = scenes.validation_clips(export_json, args.data)
    held = scenes.holdout_speaker(export_json)
    speaker = args.speaker or held or "george"
    speech = sorted(args.speech.rglob(f"*_{speaker}_*.wav"))
    if not clips or not speech:
        sys.exit(f"need keyword clips ({args.data}) and digits speech of {speaker!r} ({args.speech})")
    print(f"{len(clips)} validation clips, speech background: speaker {speaker!r} ({len(speech)} utterances)")
    keywords = [scenes.keyword(path, label, sr) for path, label in clips]
    rng = np.random.default_rng(args.seed)
    classified: dict[str, list[tuple[scenes.Scene, list[WindowStep]]]] = {"keywords": [], "background": []}
    for kind, snr in CONDITIONS:
        for part, built in (("keywords", scenes.scenes(keywords, kind, snr, args.seconds, sr, rng, speech)),
                            ("background", scenes.background_only(kind, snr, args.background_minutes, args.seconds,
                                                                  sr, rng, speech))):
            classified[part] += [(s, classify(pipeline, runner, s.audio)) for s in built]
        print(f"{kind}@{snr:g}dB classified ({time.time() - started:.0f} s)")
    results = {m: evaluate(classified, pipeline, ClassifyOptions(), m) for m in METHODS}
    sweep = {f"{t:g}": evaluate(classified, pipeline, ClassifyOptions(min_score=t), "service")["all"]
             for t in sorted({*THRESHOLDS, info.min_score})}
    report: dict[str, Any] = {
        "command": "python -m tools.bench.events " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "model": info.name, "version": info.version, "background_label": info.background_label,
        "min_score": info.min_score, "validation_clips": len(clips), "speech_speaker": speaker,
        "speaker_held_out_in_training": held, "collar_s": COLLAR_S,
        "keyword_audio_h": round(sum(len(s.audio) for s, _ in classified["keywords"]) / sr / 3600, 3),
        "background_audio_h": round(sum(len(s.audio) for s, _ in classified["background"]) / sr / 3600, 3),
        "results": results, "threshold_sweep": sweep}
    if args.stream:
        scene = next(s for s, _ in classified["keywords"] if s.condition.startswith("noise@10"))
        report["stream_latency"] = {"condition": scene.condition, "seconds": args.seconds, **latencies(
            stream_scene(args.model, scene.audio, sr, Path(tempfile.mkdtemp(prefix="events-stream-"))),
            scene.events, COLLAR_S)}
    report["wall_s"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "events.json").write_text(json.dumps(report, indent=2))
    (args.out / "EVENTS.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict[str, Any]) -> str:
    from tools.bench.event_report import render

    return render(r, GOAL_F1, GOAL_FA_PER_HOUR)


if __name__ == "__main__":
    raise SystemExit(main())
