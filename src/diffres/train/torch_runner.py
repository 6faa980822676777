"""The pipeline's runner on a PyTorch model: training evaluates recordings through the same pipeline, windows
and event rule the exported graph is served with (its outputs match the graph's within parity)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffres import contract as c
from diffres.runner import RowOutput, pad_rows, split_rows
from diffres.train.classifier import AudioClassifier
from diffres.train.requires import torch  # the `train` extra, or an error naming it


class TorchRunner:
    """Each call is one padded forward pass of the model (eval mode, no gradients)."""

    def __init__(self, model: AudioClassifier, backbone_hop: int, slots: int = 16) -> None:
        self.model = model
        self.backbone_hop = backbone_hop
        self.slots = slots

    @torch.no_grad()
    def __call__(self, rows: Sequence[np.ndarray], outputs: Sequence[str]) -> list[RowOutput]:
        waveform, lengths = pad_rows(rows)
        was_training = self.model.training
        self.model.eval()
        try:
            values = self.model(torch.from_numpy(waveform), torch.from_numpy(lengths))
        finally:
            self.model.train(was_training)
        out = {name: v.numpy() for name, v in zip(c.OUTPUTS, values, strict=True)}
        return split_rows(out, lengths, self.backbone_hop)
