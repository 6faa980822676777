"""Log-mel frontend inside the graph: frames cut by reshaping, then the DFT as two matrix products
on folded frames (symmetric and antisymmetric halves), because onnxruntime's STFT/DFT op is
several times slower on CPU and a plain DFT-as-convolution spends twice the multiply-adds."""

from __future__ import annotations

from diffres.train.requires import torch  # the `train` extra, or an error naming it
import torch.nn.functional as F
from torch import nn

from .config import FrontendConfig
from .dsp import folded_dft, mel_filterbank


class MelSpectrogram(nn.Module):
    """Waveform [B, N] -> mel power [B, T, n_mels] with T = N // hop + 1 for every N."""

    def __init__(self, cfg: FrontendConfig):
        super().__init__()
        self.win, self.hop = cfg.win_length, cfg.hop_length
        self.chunks = -(-self.win // self.hop)  # hop-sized chunks a frame spans
        fb = mel_filterbank(cfg.sample_rate, self.win, cfg.n_mels, cfg.fmin, cfg.f_max)
        # DFT bins above the top mel filter are never used: leave them out.
        n_bins = int(fb.any(axis=1).nonzero()[0].max()) + 1
        cos_rows, sin_rows = folded_dft(self.win, n_bins)
        self.register_buffer("dft_cos", torch.from_numpy(cos_rows), persistent=False)
        self.register_buffer("dft_sin", torch.from_numpy(sin_rows), persistent=False)
        self.register_buffer("filterbank", torch.from_numpy(fb[:n_bins]).contiguous(), persistent=False)

    def frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T, chunks * hop]: frame f starts at sample f * hop of the waveform padded by win // 2
        (its first win samples are the frame). Hop-sized chunks side by side, no gather."""
        b, n = waveform.shape
        t = n // self.hop + 1
        left = self.win // 2
        right = (t + self.chunks - 1) * self.hop - n - left  # >= win - left: the end is zero-padded too
        chunked = F.pad(waveform, (left, right)).reshape(b, t + self.chunks - 1, self.hop)
        return torch.cat([chunked[:, i:i + t] for i in range(self.chunks)], -1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        frames = self.frames(waveform)
        half = (self.win - 1) // 2
        head = frames[..., 1:half + 1]  # x[n], n = 1..half (x[0] meets a zero window tap)
        tail = frames[..., self.win - half:self.win].flip(-1)  # x[N - n]
        folded = head + tail
        if self.win % 2 == 0:
            folded = torch.cat([folded, frames[..., self.win // 2:self.win // 2 + 1]], -1)
        real, imag = folded @ self.dft_cos, (head - tail) @ self.dft_sin
        return (real * real + imag * imag) @ self.filterbank


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
