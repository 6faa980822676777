"""Checkpoints written by model.train: the model config, labels and weights travel together."""

from __future__ import annotations

from pathlib import Path

from diffres.train.requires import torch  # the `train` extra, or an error naming it

from .classifier import AudioClassifier
from .config import ModelConfig


def load_checkpoint(path: str | Path) -> tuple[AudioClassifier, dict]:
    """The classifier in eval mode, and the checkpoint dict (labels, configs, val clips)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = AudioClassifier(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
