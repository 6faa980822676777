"""The command lines of `diffres train` and `diffres export`, torch-free, so `--help` works in any install.

Every field of TrainConfig is an option of the same name (`--batch-size` for `batch_size`): the
dataclass is the one home of the defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from diffres.train.config import FrontendConfig, ModelConfig, TrainConfig

RESOLUTIONS = ["diffres", "full", "avgpool", "avgmaxpool", "changehop"]
# Options whose dataclass default (None) does not say their type.
OPTION_TYPES = {"clip_seconds": float, "holdout_speaker": str, "background_holdout_speaker": str}
HELP = {
    "background": "folders of non-target audio (noise, music, other speech) for a background label",
    "background_class": "train a background label from generated noise and the quiet parts of the clips "
                        "(implied by --background)",
}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="audio folder: DIR/<label>/*.wav|flac")
    p.add_argument("--out", required=True, help="run folder for best.pt and metrics.json")
    p.add_argument("--resolution", default="diffres", choices=RESOLUTIONS)
    p.add_argument("--delta", type=float, default=0.5, help="share of frames removed")
    p.add_argument("--frontend", default="log", choices=["log", "loglearn"], help="log compression kind")
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
        if f.name == "background":
            p.add_argument(flag, nargs="*", default=(), metavar="DIR", help=HELP[f.name])
        elif isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", help=HELP.get(f.name))
        elif isinstance(f.default, tuple):
            p.add_argument(flag, type=float, nargs="*", default=f.default)
        else:
            p.add_argument(flag, type=OPTION_TYPES.get(f.name, type(f.default)), default=f.default)


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
    tcfg.background, tcfg.mix_snr_db = tuple(tcfg.background), tuple(tcfg.mix_snr_db)
    sr = a.sample_rate
    if sr is None:
        from diffres.train.data import native_sample_rate, scan_audio_folder

        sr = native_sample_rate(scan_audio_folder(a.data)[0])
    front = FrontendConfig(sample_rate=sr, win_ms=a.win_ms, hop_ms=a.hop_ms, n_mels=a.n_mels, compression=a.frontend)
    return tcfg, ModelConfig(frontend=front, resolution=a.resolution, delta=a.delta, backbone_width=a.width,
                             clip_norm=a.clip_norm)


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
