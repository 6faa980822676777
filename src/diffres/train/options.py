"""The command lines of `diffres train`, `diffres calibrate` and `diffres export`, torch-free, so `--help`
works in any install.

Every field of TrainConfig is an option of the same name (`--batch-size` for `batch_size`): the
dataclass is the one home of the defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from diffres.train.config import FrontendConfig, ModelConfig, TrainConfig

RESOLUTIONS = ["diffres", "full", "avgpool", "avgmaxpool", "changehop"]
# Options whose dataclass default (None) does not say their type.
OPTION_TYPES = {"clip_seconds": float, "holdout_speaker": str, "background_holdout_speaker": str,
                "synthetic_positives": str, "event_near_miss_per_hour": float}
HELP = {
    "negatives": "folders of non-target audio (noise, music, other speech; a `python -m diffres.train.synth` "
                 "folder gives its training split) for a background label",
    "background_class": "train a background label from generated noise and the quiet parts of the clips "
                        "(implied by --negatives)",
    "rooms": "reverberated versions of each training clip, in simulated rooms",
    "context_probability": "share of keyword windows with other sound right before or after the word",
    "partial_share": "windows holding only part of a word (labelled background), per keyword window",
    "long_window_probability": "share of keyword windows up to three times the clip length (clips up to three "
                               "clip lengths run whole)",
    "synthetic_positives": "a synth folder whose synthetic keyword clips join the training clips",
    "mine_rounds": "hard-negative mining rounds: stream the negatives, train on with what fires",
    "mine_hours": "hours of training negatives streamed per mining round",
    "mine_epochs": "epochs trained on with the mined windows, per round",
    "mine_probability": "a window is mined when a keyword reaches this probability",
    "event_hops": "window hops (s) the event rule is chosen among on validation recordings (default: half the "
                  "window, one window)",
    "event_windows_max": "the most consecutive windows a label may be asked to hold",
    "event_latency_s": "the event rule's expected delay from a word's end to its event, at most",
    "event_false_alarms_per_hour": "the event rule's false alarms per hour on held-out validation speech, at most",
    "event_near_miss_per_hour": "the event rule's false alarms per hour on held-out near-miss phrases (a synth "
                                "folder's), at most (default: no bound; fewer break ties)",
    "mix_sources": "background crops summed into one mix: 1 to N at random levels (2+: several talkers at once)",
    "event_snr_db": "SNRs (dB) of the validation keywords among held-out speech and in noise that the event rule "
                    "is chosen on",
}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="audio folder: DIR/<label>/*.wav|flac")
    p.add_argument("--out", required=True, help="run folder for best.pt and metrics.json")
    p.add_argument("--resolution", default="diffres", choices=RESOLUTIONS)
    p.add_argument("--delta", type=float, default=0.5, help="share of frames removed")
    p.add_argument("--frontend", default="log", choices=["log", "loglearn", "pcen"],
                   help="compression of the mel power the classifier sees (pcen: per-channel energy normalisation)")
    p.add_argument("--sample-rate", type=int, default=None, help="default: the data's own rate")
    p.add_argument("--hop-ms", type=float, default=10.0)
    p.add_argument("--win-ms", type=float, default=25.0)
    p.add_argument("--n-mels", type=int, default=64)
    p.add_argument("--width", type=int, default=32, help="backbone base width")
    p.add_argument("--clip-norm", action="store_true", help="subtract each clip's mean log-mel per bin")
    for f in fields(TrainConfig):
        if f.name in ("data", "out"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "negatives":
            p.add_argument(flag, nargs="*", default=(), metavar="DIR", help=HELP[f.name])
        elif isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", help=HELP.get(f.name))
        elif isinstance(f.default, tuple):
            p.add_argument(flag, type=float, nargs="*", default=f.default, help=HELP.get(f.name))
        else:
            p.add_argument(flag, type=OPTION_TYPES.get(f.name, type(f.default)), default=f.default,
                           help=HELP.get(f.name))


def train_parser(prog: str = "diffres train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train a DiffRes (or baseline) classifier on an audio "
                                "folder (needs the `train` extra).")
    add_train_arguments(p)
    return p


def configs(a: argparse.Namespace) -> tuple[TrainConfig, ModelConfig]:
    """The training and model configs of parsed options (the data's own rate when none is given)."""
    if not 0.0 <= a.delta < 1.0:
        raise SystemExit("--delta must be in [0, 1)")
    tcfg = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig)})
    tcfg.speed_perturb = tuple(tcfg.speed_perturb)
    tcfg.negatives, tcfg.mix_snr_db = tuple(tcfg.negatives), tuple(tcfg.mix_snr_db)
    tcfg.event_hops, tcfg.event_snr_db = tuple(tcfg.event_hops), tuple(tcfg.event_snr_db)
    sr = a.sample_rate
    if sr is None:
        from diffres.train.data import native_sample_rate, scan_audio_folder

        sr = native_sample_rate(scan_audio_folder(a.data)[0])
    front = FrontendConfig(sample_rate=sr, win_ms=a.win_ms, hop_ms=a.hop_ms, n_mels=a.n_mels, compression=a.frontend)
    return tcfg, ModelConfig(frontend=front, resolution=a.resolution, delta=a.delta, backbone_width=a.width,
                             clip_norm=a.clip_norm)


EVENT_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name.startswith("event_"))


def add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    """RUN and the event options of `diffres train`; each one left out keeps the run's own."""
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a `diffres train` run folder (best.pt, metrics.json)")
    for f in fields(TrainConfig):
        if f.name in EVENT_OPTIONS:
            many = isinstance(f.default, tuple)
            kind = float if many else OPTION_TYPES.get(f.name, type(f.default))
            text = HELP[f.name].split(" (default")[0] + " (default: the run's own)"
            p.add_argument("--" + f.name.replace("_", "-"), type=kind, nargs="+" if many else None, default=None,
                           help=text)


CALIBRATE_HELP = ("Choose a trained run's event rule again with other event options, on the same validation "
                  "recordings, without training again; then `diffres export` (needs the `train` extra).")


def calibrate_parser(prog: str = "diffres calibrate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=CALIBRATE_HELP)
    add_calibrate_arguments(p)
    return p


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="best.pt of a training run")
    p.add_argument("--out", required=True, help="the ONNX file to write, e.g. models/NAME.onnx")
    p.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 weights for the backbone")
    p.add_argument("--skip-parity", action="store_true", help="skip the PyTorch parity check")


def export_parser(prog: str = "diffres export") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Export a checkpoint to ONNX and check parity with PyTorch "
                                "(needs the `train` extra).")
    add_export_arguments(p)
    return p
