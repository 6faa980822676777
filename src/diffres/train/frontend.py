"""Log-mel frontend inside the graph: frames cut by reshaping, then the DFT as two matrix products
on folded frames (symmetric and antisymmetric halves), because onnxruntime's STFT/DFT op is
several times slower on CPU and a plain DFT-as-convolution spends twice the multiply-adds."""

from __future__ import annotations

import math

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


def running_mean(power: torch.Tensor, decay: float, taps: int) -> torch.Tensor:
    """[B, F, T] -> the causal weighted mean of each frame and the taps - 1 before it, weights decay**age,
    the series continued at its first frame before it starts: a depthwise convolution with that kernel,
    done in log2(taps) shifted adds because onnxruntime's grouped Conv is about 4x slower on CPU."""
    n = power.shape[-1]
    z, width, parts = F.pad(power, (taps - 1, 0), mode="replicate"), 1, []
    while True:  # z[..., i] = sum_{j < width} decay**j * padded[..., i + width - 1 - j]
        if taps & width:
            parts.append((width, z))
        if width * 2 > taps:
            break
        z = z[..., width:] + decay ** width * z[..., :-width]
        width *= 2
    total, age = None, 0
    for width, z in reversed(parts):  # the taps' binary form, newest frames first
        start = taps - width - age
        term = decay ** age * z[..., start:start + n]
        total = term if total is None else total + term
        age += width
    return total * ((1.0 - decay) / (1.0 - decay ** taps))


class PCENCompression(nn.Module):
    """Per-channel energy normalisation ("pcen", Wang et al. 2017) with alpha, delta and r learnt per mel bin:
    each bin divided by its own causal running mean (time constant `time_constant_s`, started at the first
    frame), so stationary noise and the overall level fall away and onsets stand out. Causal, so frames after
    a row's end never reach its real frames. The parameters are used as they are (no transform the export
    would fold away), so a graph's weights carry them by name; `project` keeps them in range while training."""

    def __init__(self, cfg: FrontendConfig, time_constant_s: float = 0.4, taps: int = 160):
        super().__init__()
        self.decay, self.taps = math.exp(-cfg.hop_ms / 1000 / time_constant_s), taps
        self.eps = cfg.log_eps
        self.alpha = nn.Parameter(torch.full((cfg.n_mels, 1), 0.98))
        self.delta = nn.Parameter(torch.full((cfg.n_mels, 1), 2.0))
        self.r = nn.Parameter(torch.full((cfg.n_mels, 1), 0.5))

    @torch.no_grad()
    def project(self) -> None:
        self.alpha.clamp_(0.0, 1.0)
        self.delta.clamp_(min=0.01)
        self.r.clamp_(0.05, 1.0)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        power = mel.transpose(1, 2)  # [B, F, T]
        smoothed = running_mean(power, self.decay, self.taps)
        out = (power / (self.eps + smoothed) ** self.alpha + self.delta) ** self.r - self.delta ** self.r
        return out.transpose(1, 2)


def make_compression(cfg: FrontendConfig) -> nn.Module:
    kinds = {"log": LogCompression, "loglearn": LearnableLogCompression, "pcen": PCENCompression}
    return kinds[cfg.compression](cfg)
