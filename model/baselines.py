"""Fixed-resolution baselines behind DiffRes's interface (same t, same Resampled output).

AvgPool and AvgMaxPool are frame warping with a uniform score t/T: fractional-width pooling to
exactly t frames that exports with symbolic sizes (adaptive pooling does not). ChangeHopSize is
FullResolution behind a frontend whose hop is hop / (1 - delta) (see classifier.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import delta_fraction, frames_out
from .diffres import EPS, Resampled, warp_average, warp_mask, warp_max, warp_weights


class FullResolution(nn.Module):
    channels = 1

    def forward(self, x_log: torch.Tensor, mask: torch.Tensor | None = None,
                masked: torch.Tensor | None = None) -> Resampled:
        zero = x_log.new_zeros(())
        return Resampled(
            features=x_log[:, None],
            score=torch.ones_like(x_log[..., 0]),
            mask=torch.ones_like(x_log[..., 0]) if mask is None else mask.to(x_log.dtype),
            guide_loss=zero,
            activeness=zero,
        )


class UniformPool(nn.Module):
    """Pool T frames to t = T - floor(delta * T): average, plus max when with_max."""

    def __init__(self, delta: float, with_max: bool):
        super().__init__()
        self.fraction = delta_fraction(delta)
        self.with_max = with_max
        self.channels = 2 if with_max else 1

    def forward(self, x_log: torch.Tensor, mask: torch.Tensor | None = None,
                masked: torch.Tensor | None = None) -> Resampled:
        n = x_log.shape[1]
        t = frames_out(n, self.fraction)
        score = torch.ones_like(x_log[..., 0]) * (t / n)
        warp = warp_weights(score, t)
        x_lin = x_log.exp()
        channels = [torch.log(warp_average(x_lin, warp) + EPS)]
        if self.with_max:
            channels.append(torch.log(warp_max(x_lin, warp) + EPS))
        zero = x_log.new_zeros(())
        return Resampled(torch.stack(channels, 1), score, warp_mask(mask, warp), zero, zero)
