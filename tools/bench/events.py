"""Event quality on long recordings: `python -m tools.bench.events` (`make eval-events`).

Recordings (diffres.train.scenes) of the model's validation keyword clips among material the model
never heard: real speech of other people (the digits speaker its training held out), synthetic
speech of held-out voices and languages and near misses of held-out phrasings (the evaluation split
of a `python -m diffres.train.synth` folder), and noise. Keywords sit over each background at two
SNRs, and with speech right next to them (0-1 s before and after: where bounds must not slide onto
the neighbours); keyword-free recordings of each background count false alarms. Every recording
runs through the pipeline the service runs (a session runner) and its events are scored
(diffres.train.event_eval). A sweep of min_score gives a DET curve (false alarms per hour of
held-out speech against missed keywords in speech, reports/events_det.png); bounds methods are
compared by replaying the same windows with outputs left out; one recording is streamed in real
time to a real server for the delay from a keyword's end to its event and to its onset notice.
With --baseline, a second model is scored on the same recordings (before and after).
Writes reports/EVENTS.md and reports/events.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffres.models import MODELS_DIR
from diffres.pipeline import ClassifyOptions, Pipeline
from diffres.runner import OnnxModel, SessionRunner
from diffres.train import event_eval, scenes
from diffres.windows import WindowPlan
from tools.bench.event_scenes import holdout_speaker, validation_clips
from tools.bench.event_stream import latencies, stream_scene

# Keyword conditions: (name, background source, SNR in dB; None: speech right next to each keyword).
CONDITIONS = (("noise@30dB", "noise", 30.0), ("noise@10dB", "noise", 10.0), ("noise@0dB", "noise", 0.0),
              ("digits@10dB", "digits", 10.0), ("digits@0dB", "digits", 0.0), ("tts@10dB", "tts", 10.0),
              ("tts@0dB", "tts", 0.0), ("adjacent-digits", "digits", None), ("adjacent-tts", "tts", None))
SPEECH_CONDITIONS = tuple(name for name, source, _ in CONDITIONS if source != "noise")
# Keyword-free recordings per source, at the level keywords have at 10 dB over them.
SOURCES = ("noise", "digits", "tts", "near-miss")
HELD_OUT_SPEECH = ("digits", "tts")
METHODS = tuple(event_eval.ABLATIONS)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
GOALS = {"f1": 0.9, "speech_f1": 0.9, "false_alarms_per_hour": 2.0, "adjacent_onset_s": 0.1, "stream_event_s": 1.0,
         "stream_onset_s": 0.5}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=MODELS_DIR / "keywords.onnx")
    p.add_argument("--baseline", type=Path, default=None, help="another model scored on the same recordings")
    p.add_argument("--data", type=Path, default=Path("../shared/data/keywords"), help="the model's training data")
    p.add_argument("--digits", type=Path, default=Path("../shared/data/digits"), help="real speech of other people")
    p.add_argument("--synth", type=Path, default=Path("data/synth"),
                   help="a `python -m diffres.train.synth` folder: its evaluation split (held-out voices, languages)")
    p.add_argument("--speaker", default=None, help="digits speaker; default: the one the model's training held out")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    p.add_argument("--background-minutes", type=float, default=15.0, help="keyword-free audio per source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="stream one recording in real time to a real server for latency")
    p.add_argument("--out", type=Path, default=Path("reports"))
    return p.parse_args(argv)


def sources(args: argparse.Namespace) -> tuple[dict[str, list[Path]], dict[str, Any]]:
    """Each speech source's files, and what they are."""
    from diffres.train.synth import synth_files

    speaker = args.speaker or holdout_speaker(args.model.with_suffix(".export.json")) or "george"
    files = {"digits": sorted(args.digits.rglob(f"*_{speaker}_*.wav")),
             "tts": synth_files(args.synth, "eval", "negative"), "near-miss": synth_files(args.synth, "eval", "near_miss")}
    missing = [name for name, found in files.items() if not found]
    if missing:
        sys.exit(f"no audio for {missing}: need {args.digits} (speaker {speaker!r}) and the evaluation split of "
                 f"{args.synth} (python -m diffres.train.synth --out {args.synth} ...)")
    return files, {"digits_speaker": speaker, **{f"{name}_files": len(found) for name, found in files.items()}}


def recordings(args: argparse.Namespace, sr: int, files: dict[str, list[Path]]) -> list[tuple[scenes.Scene, bool]]:
    """Every condition's keyword recordings, then every source's keyword-free ones (marked True)."""
    clips = validation_clips(args.model.with_suffix(".export.json"), args.data)
    keywords = [scenes.keyword(path, label, sr) for path, label in clips]
    rng = np.random.default_rng(args.seed)
    built: list[tuple[scenes.Scene, bool]] = []
    for name, source, snr in CONDITIONS:
        speech = files.get(source, [])
        made = (scenes.adjacent_scenes(keywords, args.seconds, sr, rng, speech, name=name) if snr is None else
                scenes.scenes(keywords, "noise" if source == "noise" else "speech", snr, args.seconds, sr, rng, speech,
                              name=name))
        built += [(s, False) for s in made]
    for source in SOURCES:
        kind = "noise" if source == "noise" else "speech"
        built += [(s, True) for s in scenes.background_only(kind, 10.0, args.background_minutes, args.seconds, sr, rng,
                                                           files.get(source, []), name=f"alone: {source}")]
    return built


def score(model_path: Path, built: list[tuple[scenes.Scene, bool]], threads: int) -> dict[str, Any]:
    """One model on the recordings: every bounds method, the threshold sweep, the figures the goals name."""
    model = OnnxModel.load(model_path, intra_op_threads=threads)
    info, plan = model.info, WindowPlan.for_model(model.info)
    pipeline, runner = Pipeline(info, plan), SessionRunner(model)
    classified = [(scene, event_eval.classify(pipeline, runner, scene.audio), alone) for scene, alone in built]
    results = {m: {name: t.summary() for name, t in event_eval.tally(classified, pipeline, ClassifyOptions(),
                                                                    m).items()} for m in METHODS}
    sweep = {f"{t:g}": det_point(classified, pipeline, t) for t in sorted({*THRESHOLDS, info.min_score})}
    return {"model": info.name, "version": info.version, "min_score": info.min_score,
            "window_s": plan.window / info.sample_rate, "window_hop_s": plan.hop / info.sample_rate,
            "event_windows": plan.event_windows, "max_word_s": plan.max_word_s, "results": results,
            "threshold_sweep": sweep, "headline": headline(results["service"], classified, pipeline)}


def combined(counts: dict[str, event_eval.Tally], names: tuple[str, ...]) -> event_eval.Tally:
    total = event_eval.Tally()
    for name in names:
        total.merge(counts.get(name, event_eval.Tally()))
    return total


def det_point(classified: event_eval.Classified, pipeline: Pipeline, threshold: float) -> dict[str, Any]:
    """At one min_score: F1 in speech, missed keywords in speech, false alarms per hour of held-out speech."""
    counts = event_eval.tally(classified, pipeline, ClassifyOptions(min_score=threshold))
    speech = combined(counts, SPEECH_CONDITIONS).summary()
    held_out = combined(counts, tuple(f"alone: {s}" for s in HELD_OUT_SPEECH)).summary()
    return {"f1": counts["all"].summary()["f1"], "speech_f1": speech["f1"], "miss_rate": round(1 - speech["recall"], 4),
            "false_alarms_per_hour": held_out["false_alarms_per_hour"]}


def headline(service: dict[str, Any], classified: event_eval.Classified, pipeline: Pipeline) -> dict[str, Any]:
    """The figures the goals are stated in, at the model's own threshold."""
    counts = event_eval.tally(classified, pipeline, ClassifyOptions())
    return {"f1": service["all"]["f1"], "speech_f1": combined(counts, SPEECH_CONDITIONS).summary()["f1"],
            "false_alarms_per_hour": combined(counts, tuple(f"alone: {s}" for s in HELD_OUT_SPEECH)).summary()[
                "false_alarms_per_hour"],
            "false_alarms_per_hour_by_source": {s: service[f"alone: {s}"]["false_alarms_per_hour"] for s in SOURCES},
            "adjacent_onset_s": combined(counts, ("adjacent-digits", "adjacent-tts")).summary()["onset_abs_err_median_s"],
            "adjacent_offset_s": combined(counts, ("adjacent-digits", "adjacent-tts")).summary()["offset_abs_err_median_s"]}


def stream_latency(model_path: Path, built: list[tuple[scenes.Scene, bool]], sr: int, seconds: float) -> dict[str, Any]:
    scene = next(s for s, alone in built if not alone and s.condition == "noise@10dB")
    received = stream_scene(model_path, scene.audio, sr, Path(tempfile.mkdtemp(prefix="events-stream-")))
    return {"condition": scene.condition, "seconds": seconds, **latencies(received, scene.events, event_eval.COLLAR_S)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    files, about = sources(args)
    sr = OnnxModel.load(args.model, intra_op_threads=1).info.sample_rate
    built = recordings(args, sr, files)
    print(f"{len(built)} recordings built ({time.time() - started:.0f} s)")
    models = {"model": args.model} | ({"baseline": args.baseline} if args.baseline else {})
    report: dict[str, Any] = {
        "command": "python -m tools.bench.events " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "collar_s": event_eval.COLLAR_S, "goals": GOALS, **about,
        "keywords": sum(len(s.events) for s, _ in built) // len(CONDITIONS),
        "keyword_audio_h": round(sum(len(s.audio) for s, alone in built if not alone) / sr / 3600, 3),
        "background_audio_h": round(sum(len(s.audio) for s, alone in built if alone) / sr / 3600, 3)}
    for key, path in models.items():
        report[key] = score(path, built, args.threads)
        if args.stream:
            report[key]["stream_latency"] = stream_latency(path, built, sr, args.seconds)
        print(f"{key} scored ({time.time() - started:.0f} s)")
    report["wall_s"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "events.json").write_text(json.dumps(report, indent=2))
    from tools.bench.event_report import det_picture, render

    det_picture(report, args.out / "events_det.png")
    (args.out / "EVENTS.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
