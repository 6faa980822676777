"""The whole classifier: waveform -> log-mel -> resolution module (DiffRes or a baseline) -> CNN."""

from __future__ import annotations

import dataclasses

from diffres.train.requires import torch  # the `train` extra, or an error naming it
from torch import nn

from .backbone import Backbone
from .baselines import FullResolution, UniformPool
from .config import ModelConfig, changehop_hop_ms, frames_in
from .diffres import DiffRes, Resampled, empty_frames, valid_frames
from .frontend import MelSpectrogram, make_compression


def normalize_clip(x_log: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Subtract each clip's mean log-mel per bin over its real frames (cepstral mean normalisation)."""
    m = valid[..., None].to(x_log.dtype)
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
    return dataclasses.replace(cfg.frontend, hop_ms=changehop_hop_ms(cfg.frontend.hop_ms, cfg.delta))


class AudioClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = MelSpectrogram(effective_frontend(cfg))
        self.compress = make_compression(cfg.frontend)
        self.resolution = make_resolution(cfg)
        self.backbone = Backbone(self.resolution.channels, cfg.n_classes, cfg.backbone_width, cfg.dropout)

    def classify(self, x_log: torch.Tensor, n_frames: torch.Tensor | None = None,
                 masked: torch.Tensor | None = None) -> tuple[torch.Tensor, Resampled]:
        """Log-mel [B, T, F] padded at the end, n_frames [B] real frames per row (None: all T) -> logits.

        The entry point for training on cached mel spectrograms; each row is classified exactly as
        if it were alone and unpadded.
        """
        if n_frames is None:
            n_frames = torch.full(x_log.shape[:1], x_log.shape[1], dtype=torch.int64, device=x_log.device)
        if self.cfg.clip_norm:
            valid = valid_frames(n_frames, x_log.shape[1])
            silent = empty_frames(x_log, valid, None)  # judged before normalising shifts the energy
            masked = silent if masked is None else masked | silent
            x_log = normalize_clip(x_log, valid)
        r = self.resolution(x_log, n_frames, masked)
        return self.backbone(r.features, r.frames), r

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exported graph (diffres/contract.py): waveform [B, N] padded at the end, lengths [B]
        valid samples per row (None: all N) -> logits [B, K], importance [B, T], frames_in [B],
        frames_out [B] (int64), logmel [B, T, n_mels] (0 beyond each row's frames).

        frames_in counts frames at the configured hop (for ChangeHopSize, what full resolution
        would have seen); frames_out is what the backbone gets.
        """
        n = waveform.shape[1]
        if lengths is None:
            lengths = torch.full(waveform.shape[:1], n, dtype=torch.int64, device=waveform.device)
        lengths = torch.clamp(lengths, 0, n)
        # Samples past a row's end read as zeros, as the frontend's own end padding does alone.
        inside = torch.arange(n, device=waveform.device)[None] < lengths[:, None]
        mel = self.mel(waveform * inside.to(waveform.dtype))
        x_log = self.compress(mel)
        n_frames = frames_in(lengths, self.mel.hop)
        logits, r = self.classify(x_log, n_frames)
        if self.cfg.frontend.compression == "pcen":  # the contract's logmel stays a log-mel
            x_log = torch.log(mel + self.cfg.frontend.log_eps)
        logmel = x_log * valid_frames(n_frames, x_log.shape[1])[..., None].to(x_log.dtype)
        return logits, r.score, frames_in(lengths, self.cfg.frontend.hop_length), r.frames, logmel
