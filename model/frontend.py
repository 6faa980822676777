"""Log-mel frontend inside the graph: the STFT is one strided conv1d (DFT as convolution, the
nnAudio idea), because onnxruntime's STFT/DFT op is several times slower on CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FrontendConfig
from .dsp import dft_kernel, mel_filterbank


class MelSpectrogram(nn.Module):
    """Waveform [B, N] -> mel power [B, T, n_mels] with T = N // hop + 1 for every N."""

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.win, self.hop = cfg.win_length, cfg.hop_length
        fb = mel_filterbank(cfg.sample_rate, self.win, cfg.n_mels, cfg.fmin, cfg.f_max)
        # DFT bins above the top mel filter are never used: leave them out of the conv.
        n_bins = int(fb.any(axis=1).nonzero()[0].max()) + 1
        self.register_buffer("dft", torch.from_numpy(dft_kernel(self.win, n_bins)), persistent=False)
        # Re and im rows share the same mel weight, so |X|^2 -> mel is a single matmul, [n_mels, 2 * bins].
        mel = torch.from_numpy(fb[:n_bins]).T
        self.register_buffer("mel", torch.cat([mel, mel], dim=1).contiguous(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = F.pad(waveform[:, None, :], (self.win // 2, self.win - self.win // 2))
        spec = F.conv1d(x, self.dft, stride=self.hop)  # [B, 2 * bins, T]
        # mel @ power, then transpose the small result: never a copy of the [bins, T] spectrogram.
        return torch.matmul(self.mel, spec * spec).transpose(1, 2)


class LogCompression(nn.Module):
    """log(mel + eps): the default."""

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.eps = cfg.log_eps

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.log(mel + self.eps)


class LearnableLogCompression(nn.Module):
    """log(alpha * mel + beta) per mel bin with learnt alpha, beta > 0 ("log-learn")."""

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(cfg.n_mels))
        self.log_beta = nn.Parameter(torch.full((cfg.n_mels,), float(torch.tensor(cfg.log_eps).log())))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.log(self.log_alpha.exp() * mel + self.log_beta.exp())


def make_compression(cfg: FrontendConfig) -> nn.Module:
    return LearnableLogCompression(cfg) if cfg.compression == "loglearn" else LogCompression(cfg)
