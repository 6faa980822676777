"""Small pure DSP helpers (numpy for fixed weights, torch where they run inside the graph)."""

from __future__ import annotations

import math

import numpy as np
import torch


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular HTK-mel filters with area normalisation, shape [n_fft // 2 + 1, n_mels]."""
    bin_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None] - lo) / (mid - lo)
    falling = (hi - bin_hz[None]) / (hi - mid)
    tri = np.clip(np.minimum(rising, falling), 0.0, None) * (2.0 / (hi - lo))
    return tri.T.astype(np.float32)


def dft_kernel(win_length: int, n_bins: int) -> np.ndarray:
    """Hann-windowed real-DFT basis as conv1d weights [2 * n_bins, 1, win_length] (cos rows, then sin)."""
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)  # periodic Hann
    phase = 2 * np.pi * np.outer(np.arange(n_bins), n) / win_length
    basis = np.concatenate([np.cos(phase), -np.sin(phase)]) * window
    return basis[:, None, :].astype(np.float32)


def sinusoidal_position_code(n_frames: torch.Tensor | int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Transformer position code [n_frames, dim] generated for any length (no fixed-size buffer).

    In float64: angles reach tens of thousands of radians on long inputs, where float32 sin
    implementations (torch vs onnxruntime) disagree in the 4th decimal.
    """
    pos = torch.arange(n_frames, device=like.device, dtype=torch.float64)[:, None]
    half = torch.arange(0, dim, 2, device=like.device, dtype=torch.float64)
    freq = torch.exp(half * (-math.log(10000.0) / dim))
    angle = pos * freq  # [T, ceil(dim/2)]
    code = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(1)
    return code[:, :dim].to(like.dtype)
