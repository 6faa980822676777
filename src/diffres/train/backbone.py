"""Compact ResNet-style 2-D CNN for 2 CPU cores.

Why this one: plain 3x3 convolutions run as dense GEMMs, which onnxruntime's CPU kernels do near
peak (depthwise/grouped convs look cheaper on paper but run far below peak on CPU). Frequency is
halved early, so most work happens on small maps; time is downsampled 4x in total.

Rows of a batch are padded at the end to the longest. After every layer whose output a 3x3 conv
reads, padded positions are zeroed again, so a conv near a row's end reads exactly the zeros it
reads when the row runs alone; pooling takes each row's real positions only. About 1 M
multiply-adds per input frame at width 32: the classifier dominates the frontend's cost, and
DiffRes's frame reduction shows up almost one-for-one in speed.
"""

from __future__ import annotations

from diffres.train.requires import torch  # the `train` extra, or an error naming it
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Identity() if c_in == c_out and stride == (1, 1) else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor, n_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """n_frames [B]: each row's real output positions -> output and its keep mask [B, 1, t_out, 1].

        The mask is sized from the conv's own output, so export needs no proof that two size
        formulas agree (torch.export fails on such guards for some deltas)."""
        h = self.conv1(x)
        keep = keep_mask(n_frames, h.shape[2], h)
        h = F.relu(self.bn1(h)) * keep
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x)) * keep, keep


def strided_frames(n_frames: torch.Tensor, stride: int) -> torch.Tensor:
    """Output length of a kernel-3, padding-1 conv with this time stride: ceil(n / stride)."""
    return (n_frames + stride - 1) // stride


def keep_mask(n_frames: torch.Tensor, size: int, like: torch.Tensor) -> torch.Tensor:
    """[B, 1, size, 1] 1.0 on each row's first n_frames positions."""
    valid = torch.arange(size, device=n_frames.device)[None] < n_frames[:, None]
    return valid.to(like.dtype)[:, None, :, None]


class Backbone(nn.Module):
    """[B, C, t, F] (+ mask [B, t]) -> logits [B, n_classes]."""

    time_strides = (1, 2, 2)

    def __init__(self, in_channels: int, n_classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, stride=(1, 2), padding=1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.ModuleList([
            ResBlock(w, w, (self.time_strides[0], 1)),
            ResBlock(w, 2 * w, (self.time_strides[1], 2)),
            ResBlock(2 * w, 4 * w, (self.time_strides[2], 2)),
        ])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * w, n_classes)

    def forward(self, x: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """x [B, C, t, F] padded at the end; n_frames [B] int64 real frames per row."""
        keep = keep_mask(n_frames, x.shape[2], x)
        # where, not a product: whatever sits beyond a row's end (even inf/NaN) must not leak in.
        h = self.stem(torch.where(keep > 0, self.input_norm(x), 0.0)) * keep
        for stage, stride in zip(self.stages, self.time_strides):
            n_frames = strided_frames(n_frames, stride)
            h, keep = stage(h, n_frames)
        h = h.mean(-1)  # [B, C, t']
        m = keep[:, :, :, 0]
        # float64 sum: hour-long inputs pool ~10^5 positions, where float32 drifts by ~1e-3.
        mean = ((h * m).double().sum(-1) / m.double().sum(-1).clamp_min(1.0)).to(h.dtype)
        mx = (h + (m - 1.0) * 1e4).amax(-1)
        return self.head(self.dropout(torch.cat([mean, mx], 1)))
