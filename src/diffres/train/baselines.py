"""Fixed-resolution baselines behind DiffRes's interface (same per-row t, same Resampled output).

AvgPool and AvgMaxPool are frame warping with a uniform score t_b/T_b per row: fractional-width
pooling to exactly t_b frames that exports with symbolic sizes (adaptive pooling does not).
ChangeHopSize is FullResolution behind a frontend whose hop is hop / (1 - delta) (classifier.py).
"""

from __future__ import annotations

from diffres.train.requires import torch  # the `train` extra, or an error naming it
from torch import nn

from .config import delta_fraction, frames_out
from .diffres import EPS, Resampled, frame_rows, valid_frames, warp_average, warp_max, warp_weights


class FullResolution(nn.Module):
    channels = 1

    def forward(self, x_log: torch.Tensor, n_frames: torch.Tensor,
                masked: torch.Tensor | None = None) -> Resampled:
        zero = x_log.new_zeros(())
        return Resampled(
            features=x_log[:, None],
            score=valid_frames(n_frames, x_log.shape[1]).to(x_log.dtype),
            frames=n_frames,
            guide_loss=zero,
            activeness=zero,
        )


class UniformPool(nn.Module):
    """Pool each row's T_b frames to t_b = T_b - floor(delta * T_b): average, plus max when with_max."""

    def __init__(self, delta: float, with_max: bool):
        super().__init__()
        self.fraction = delta_fraction(delta)
        self.with_max = with_max
        self.channels = 2 if with_max else 1

    def forward(self, x_log: torch.Tensor, n_frames: torch.Tensor,
                masked: torch.Tensor | None = None) -> Resampled:
        valid = valid_frames(n_frames, x_log.shape[1])
        t = frames_out(n_frames, self.fraction)
        per_frame = t.double() / n_frames.double().clamp_min(1.0)
        score = valid.double() * per_frame[:, None]
        warp = warp_weights(score, t, frames_out(x_log.shape[1], self.fraction))
        x_lin = torch.where(valid[..., None], x_log.exp(), 0.0)  # exp may overflow in padding
        rows = frame_rows(x_lin, warp)  # gathered once for both channels
        channels = [torch.log(warp_average(x_lin, warp, rows).clamp_min(0.0) + EPS)]
        if self.with_max:
            channels.append(torch.log(warp_max(x_lin, warp, rows).clamp_min(0.0) + EPS))
        zero = x_log.new_zeros(())
        return Resampled(torch.stack(channels, 1), score.to(x_log.dtype), t, zero, zero)
