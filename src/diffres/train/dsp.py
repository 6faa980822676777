"""Small pure DSP helpers (numpy for fixed weights, torch where they run inside the graph)."""

from __future__ import annotations

import math

import numpy as np
from diffres.train.requires import torch  # the `train` extra, or an error naming it


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


def folded_dft(win_length: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed real DFT of folded frames: cos rows [taps, n_bins] for x[n] + x[N - n] (and the
    centre tap when N is even), -sin rows [taps, n_bins] for x[n] - x[N - n], n = 1..(N - 1) // 2.

    The periodic Hann window is symmetric about the frame's centre and 0 at n = 0, the cos basis is
    symmetric and the sin basis antisymmetric: folding each frame first halves the multiply-adds of
    the DFT, the frontend's largest cost.
    """
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)  # periodic Hann
    half = (win_length - 1) // 2
    paired = np.arange(1, half + 1)
    even_taps = np.arange(1, win_length // 2 + 1)  # paired taps, plus the centre when N is even
    phase = 2 * np.pi * np.arange(n_bins) / win_length
    cos_rows = np.cos(np.outer(even_taps, phase)) * window[even_taps, None]
    sin_rows = -np.sin(np.outer(paired, phase)) * window[paired, None]
    return cos_rows.astype(np.float32), sin_rows.astype(np.float32)


POSITION_BLOCK = 64  # frames per block of the position code's angle-addition table


def sinusoidal_position_code(n_frames: torch.Tensor | int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Transformer position code [n_frames, dim] (sin, cos interleaved) generated for any length.

    Angles reach tens of thousands of radians on long inputs, where float32 sin implementations
    (torch vs onnxruntime) disagree in the 4th decimal. Column c is sin(i * w_c + phase_c) (phase
    pi/2 for the cos columns); with i = 64 q + r, angle addition runs sin and cos in float64 on the
    T / 64 block starts only, against a constant 64-row table, not on every frame (onnxruntime's
    float64 Sin / Cos are scalar loops). The products with the table are float32: both factors are
    exact to float32 rounding, so each code value is within ~2e-7 of the true one.
    """
    freq = np.exp(np.arange(dim) // 2 * 2 * (-math.log(10000.0) / dim))
    phase = np.arange(dim) % 2 * (math.pi / 2)
    within = np.arange(POSITION_BLOCK)[:, None] * freq  # [64, dim]
    sin_r, cos_r = (torch.tensor(f(within), device=like.device, dtype=like.dtype) for f in (np.sin, np.cos))
    blocks = (n_frames + POSITION_BLOCK - 1) // POSITION_BLOCK
    start = torch.arange(blocks, device=like.device, dtype=torch.float64)[:, None, None] * POSITION_BLOCK
    angle = start * torch.tensor(freq, device=like.device) + torch.tensor(phase, device=like.device)  # [Q, 1, dim]
    code = torch.sin(angle).to(like.dtype) * cos_r + torch.cos(angle).to(like.dtype) * sin_r  # [Q, 64, dim]
    return code.flatten(0, 1)[:n_frames]
