"""Compact ResNet-style 2-D CNN for 2 CPU cores.

Why this one: plain 3x3 convolutions run as dense GEMMs, which onnxruntime's CPU kernels do near
peak (depthwise/grouped convs look cheaper on paper but run far below peak on CPU). Frequency is
halved early, so most work happens on small maps; time is downsampled 4x in total and the output
mask follows, so padded frames stay out of the masked mean+max pooling at the end. About 1 M
multiply-adds per input frame at width 32: the classifier dominates the frontend's cost, and
DiffRes's frame reduction shows up almost one-for-one in speed.
"""

from __future__ import annotations

import torch
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class Backbone(nn.Module):
    """[B, C, t, F] (+ mask [B, t]) -> logits [B, n_classes]."""

    time_strides = (1, 2, 2)

    def __init__(self, in_channels: int, n_classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, stride=(1, 2), padding=1, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(
            ResBlock(w, w, (self.time_strides[0], 1)),
            ResBlock(w, 2 * w, (self.time_strides[1], 2)),
            ResBlock(2 * w, 4 * w, (self.time_strides[2], 2)),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8 * w, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(self.input_norm(x))).mean(-1)  # [B, C, t']
        # The mask follows the time strides; sized from h itself so export keeps one symbolic length.
        m = F.interpolate(mask[:, None], size=h.shape[-1], mode="nearest")
        # float64 sum: hour-long inputs pool ~10^5 positions, where float32 drifts by ~1e-3.
        mean = ((h * m).double().sum(-1) / m.double().sum(-1).clamp_min(1.0)).to(h.dtype)
        mx = (h + (m - 1.0) * 1e4).amax(-1)
        return self.head(self.dropout(torch.cat([mean, mx], 1)))
