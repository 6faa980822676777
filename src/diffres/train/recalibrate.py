"""diffres calibrate RUN [--event-... ...]: choose a trained run's event rule again, without training again.

The rule (calibrate.py) is chosen at the end of `diffres train` by the run's event options. A team that
wants another false-alarm budget, latency, set of hops or validation SNRs would otherwise pay a whole
training run for it. This reruns only the choice, on the same validation recordings (the run's seed,
validation clips and held-out negatives, read from RUN/best.pt), with the options given here replacing
the run's own. The weights are not touched: RUN/best.pt gets the new rule and options, RUN/metrics.json
the new `event_rule` and this command; `diffres export` then writes a model that carries it. Run it from
the folder the training ran in (the negatives' paths are relative to it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from diffres.train.requires import torch  # the `train` extra, or an error naming it

from . import calibrate
from .background import negative_files
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .onnx_export import model_info
from .options import EVENT_OPTIONS, calibrate_parser
from .trainer import seed_everything


def saved_config(ckpt: dict[str, Any]) -> TrainConfig:
    """The run's training config; options newer than the run take their defaults."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in ckpt["train_config"].items() if k in known})


def calibrate_run(run: Path, changes: dict[str, Any], command: str = "") -> dict[str, Any]:
    """Choose `run`'s event rule with `changes` to its event options; rewrite best.pt and metrics.json."""
    model, ckpt = load_checkpoint(run / "best.pt")
    tcfg = replace(saved_config(ckpt), **changes)
    seed_everything(tcfg.seed, tcfg.threads)  # the model's outputs exactly as at the end of training
    info = model_info(model, ckpt["labels"], tcfg.clip_seconds, name=run.name,
                      background_label=ckpt["background_label"], min_score=ckpt["min_score"])
    clips = [(path, Path(path).parent.name) for path in ckpt["val_clips"]]
    negatives = negative_files(list(tcfg.negatives), tcfg.seed, tcfg.background_holdout_speaker)
    chosen = calibrate.rule_for_run(model, info, tcfg, clips, negatives) if ckpt["background_label"] else None
    if chosen is None:
        raise SystemExit(f"{run}: nothing to choose on (the run needs a background label, negatives with "
                         "held-out speech and --event-hops)")
    rule, choice = chosen
    ckpt.update(train_config=asdict(tcfg), min_score=rule.min_score, window_hop_s=rule.window_hop_s,
                event_windows=rule.event_windows, max_word_s=rule.max_word_s)
    torch.save(ckpt, run / "best.pt")
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics.update(min_score=rule.min_score, event_rule=choice, calibrate_command=command)
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return choice


def main(argv: list[str] | None = None) -> int:
    """`python -m diffres.train.recalibrate ...`, the same as `diffres calibrate ...`."""
    args = sys.argv[1:] if argv is None else argv
    return calibrate_command(calibrate_parser().parse_args(args), shlex.join(["diffres", "calibrate", *args]))


def calibrate_command(a: argparse.Namespace, command: str) -> int:
    """`diffres calibrate ...`: choose, rewrite the run, print the chosen rule."""
    changes = {name: tuple(v) if isinstance(v, list) else v for name in EVENT_OPTIONS
               if (v := getattr(a, name)) is not None}
    choice = calibrate_run(a.run_dir, changes, command)
    print(json.dumps({k: choice[k] for k in ("chosen", "false_alarms_per_hour_goal", "snr_db", "max_word_s_f1")},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
