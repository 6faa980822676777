"""Fresh random-init models with the keywords model's configuration, exported through the project's
own `export_onnx` (so the benchmark always measures the current graph), plus the frontend alone.

Throughput does not depend on trained weights, and every resolution shares one backbone config,
so "DiffRes vs full resolution" compares exactly the same CNN.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from diffres.contract import WAVEFORM, frames_in
from diffres.train.classifier import AudioClassifier
from diffres.train.config import FrontendConfig, ModelConfig
from diffres.train.onnx_export import EXAMPLE_SECONDS, OPSET, export_onnx, model_info
from tools.compare.variants import Variant
from tools.compare.variants import model_config as variant_config

# The shipped keywords model: 16 kHz, 64 mels, 10 ms hop, 25 ms window, backbone width 32, 6 labels.
KEYWORDS_FRONTEND = FrontendConfig(sample_rate=16000, win_ms=25.0, hop_ms=10.0, n_mels=64)
KEYWORDS_CLASSES = 6
KEYWORDS_CLIP_SECONDS = 3.0  # metadata only: throughput does not depend on it


@dataclass
class Exported:
    name: str  # a comparison variant's name ("full", "diffres-0.5", ...) or "frontend"
    path: Path
    config: dict
    model: nn.Module  # the PyTorch module that was exported (eval mode)


def model_config(v: Variant) -> ModelConfig:
    """The comparison variant with the keywords model's frontend and classes."""
    cfg = variant_config(v, KEYWORDS_FRONTEND.sample_rate)
    cfg.n_classes = KEYWORDS_CLASSES
    return cfg


def export_classifier(v: Variant, out_dir: Path, seed: int = 0, estimator: tuple[int, int] | None = None) -> Exported:
    """`estimator`: (channels, blocks) of DiffRes's importance CNN instead of the default; the model is
    then named `<variant>-est<channels>x<blocks>`."""
    torch.manual_seed(seed)
    cfg = model_config(v)
    name = v.name
    if estimator:
        cfg.estimator_channels, cfg.estimator_blocks = estimator
        name = f"{v.name}-est{estimator[0]}x{estimator[1]}"
    model = AudioClassifier(cfg).eval()
    path = out_dir / f"{name}.onnx"
    labels = [f"class{i}" for i in range(KEYWORDS_CLASSES)]
    meta = model_info(model, labels, KEYWORDS_CLIP_SECONDS, name).to_metadata() | {"benchmark": "random-init"}
    export_onnx(model, path, meta)
    return Exported(name, path, cfg.to_dict(), model)


class Frontend(nn.Module):
    """Waveform [B, N] -> log-mel [B, T, F]: exactly the classifier's first two modules."""

    def __init__(self, model: AudioClassifier):
        super().__init__()
        self.mel, self.compress = model.mel, model.compress

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.compress(self.mel(waveform))


def export_frontend(model: AudioClassifier, out_dir: Path) -> Exported:
    """Same exporter settings as export_onnx (opset, dynamo, symbolic batch and length, optimize)."""
    frontend = Frontend(model).eval()
    example = (torch.randn(2, int(EXAMPLE_SECONDS * model.cfg.frontend.sample_rate)),)
    path = _export(frontend, example, [WAVEFORM], "log_mel", out_dir / "frontend.onnx")
    return Exported("frontend", path, asdict(model.cfg.frontend), frontend)


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_name: str,
            path: Path) -> Path:
    """export_onnx's exporter settings: every input's first axis and a 2-D+ input's second symbolic."""
    dynamic = tuple({0: Dim.DYNAMIC, 1: Dim.DYNAMIC} if x.dim() > 1 else {0: Dim.DYNAMIC} for x in example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, example, None, input_names=input_names, output_names=[output_name], opset_version=OPSET,
            dynamo=True, dynamic_shapes=dynamic, optimize=True, verbose=False,
        )
    program.save(str(path))
    return path


class Resolution(nn.Module):
    """Log-mel [B, T, F] and real frames [B] -> the resolution module's features: its own code alone."""

    def __init__(self, model: AudioClassifier):
        super().__init__()
        self.resolution = model.resolution

    def forward(self, log_mel: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        return self.resolution(log_mel, n_frames).features


RESOLUTION_INPUTS = ("log_mel", "n_frames")


def export_resolution(m: Exported, out_dir: Path) -> Exported:
    """A classifier's resolution module alone (same name as the classifier), same exporter settings."""
    module = Resolution(m.model).eval()
    front = m.model.cfg.frontend
    frames = frames_in(int(EXAMPLE_SECONDS * front.sample_rate), front.hop_length)
    example = (torch.randn(2, frames, front.n_mels), torch.tensor([frames, frames - 30]))
    path = _export(module, example, list(RESOLUTION_INPUTS), "features", out_dir / f"resolution-{m.name}.onnx")
    return Exported(m.name, path, m.config, module)
