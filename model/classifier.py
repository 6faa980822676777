"""The whole classifier: waveform -> log-mel -> resolution module (DiffRes or a baseline) -> CNN."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .backbone import Backbone
from .baselines import FullResolution, UniformPool
from .config import ModelConfig
from .diffres import DiffRes, Resampled, empty_frames
from .frontend import MelSpectrogram, make_compression


def normalize_clip(x_log: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Subtract each clip's mean log-mel per bin over its real frames (cepstral mean normalisation)."""
    if mask is None:
        return x_log - x_log.mean(1, keepdim=True)
    m = mask[..., None].to(x_log.dtype)
    return x_log - (x_log * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)


def make_resolution(cfg: ModelConfig) -> nn.Module:
    if cfg.resolution == "diffres":
        return DiffRes(cfg.frontend.n_mels, cfg.delta, cfg.estimator_channels, cfg.estimator_blocks)
    if cfg.resolution in ("avgpool", "avgmaxpool"):
        return UniformPool(cfg.delta, with_max=cfg.resolution == "avgmaxpool")
    return FullResolution()  # "full", and "changehop" whose frontend does the reducing


def effective_frontend(cfg: ModelConfig):
    """ChangeHopSize reduces frames in the frontend: hop / (1 - delta)."""
    if cfg.resolution != "changehop":
        return cfg.frontend
    return dataclasses.replace(cfg.frontend, hop_ms=cfg.frontend.hop_ms / (1.0 - cfg.delta))


class AudioClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = MelSpectrogram(effective_frontend(cfg))
        self.compress = make_compression(cfg.frontend)
        self.resolution = make_resolution(cfg)
        self.backbone = Backbone(self.resolution.channels, cfg.n_classes, cfg.backbone_width, cfg.dropout)

    def classify(self, x_log: torch.Tensor, mask: torch.Tensor | None = None,
                 masked: torch.Tensor | None = None) -> tuple[torch.Tensor, Resampled]:
        """Log-mel [B, T, F] -> logits; the entry point for training on cached mel spectrograms."""
        if self.cfg.clip_norm:
            silent = empty_frames(x_log, None, None)  # judged before normalising shifts the energy
            masked = silent if masked is None else masked | silent
            x_log = normalize_clip(x_log, mask)
        r = self.resolution(x_log, mask, masked)
        return self.backbone(r.features, r.mask), r

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Waveform [B, N] -> logits [B, K], importance [B, T], frames_in [B], frames_out [B] (int64).

        frames_in counts frames at the configured hop (for ChangeHopSize, what full resolution
        would have seen); frames_out is what the backbone gets.
        """
        x_log = self.compress(self.mel(waveform))
        logits, r = self.classify(x_log)
        batch = waveform.shape[0]
        n_in = waveform.shape[1] // self.cfg.frontend.hop_length + 1
        frames_in = torch.full((batch,), n_in, dtype=torch.int64, device=waveform.device)
        frames_out = torch.full((batch,), r.features.shape[2], dtype=torch.int64, device=waveform.device)
        return logits, r.score, frames_in, frames_out
