"""Hard-negative mining: what a trained model mistakes for a keyword in long streams of other speech.

The training negatives (never the validation or evaluation ones) are played back to back as long
recordings and run through the pipeline the service runs (TorchRunner, the finest event hop); every
window whose best keyword probability reaches `min_probability` is kept, as mel power, for the
background label's hard examples (background.py). Training then goes on with them (trainer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffres.contract import ModelInfo
from diffres.pipeline import Pipeline
from diffres.runner import RowOutput
from diffres.train import event_eval, scenes
from diffres.train.classifier import AudioClassifier
from diffres.train.requires import torch  # the `train` extra, or an error naming it
from diffres.train.torch_runner import TorchRunner
from diffres.windows import WindowPlan

STREAM_SECONDS = 120.0


class _Recording(TorchRunner):
    """TorchRunner that keeps the rows it ran, in order (one per window the pipeline cut)."""

    def __init__(self, model: AudioClassifier, backbone_hop: int) -> None:
        super().__init__(model, backbone_hop)
        self.rows: list[np.ndarray] = []

    def __call__(self, rows: Sequence[np.ndarray], outputs: Sequence[str]) -> list[RowOutput]:
        self.rows += list(rows)
        return super().__call__(rows, outputs)


@torch.no_grad()
def mine(model: AudioClassifier, info: ModelInfo, files: list[str], hours: float, min_probability: float,
         seed: int) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Mel power of the windows that looked like a keyword, over `hours` of the files back to back."""
    rng = np.random.default_rng(seed)
    pipeline = Pipeline(info, WindowPlan.for_model(info))
    keywords = [i for i, label in enumerate(info.labels) if label != info.background_label]
    found: list[torch.Tensor] = []
    windows = 0
    for _ in range(max(1, round(hours * 3600 / STREAM_SECONDS))):
        audio = scenes.speech_bed([Path(f) for f in files], STREAM_SECONDS, info.sample_rate, rng)
        audio *= 10 ** ((scenes.KEYWORD_DBFS + rng.uniform(-6, 6)) / 20)  # at the level keywords are heard at
        runner = _Recording(model, info.backbone_hop)
        steps = event_eval.classify(pipeline, runner, audio)
        windows += len(steps)
        for step, row in zip(steps, runner.rows, strict=True):
            if float(step.probs[keywords].max()) >= min_probability:
                found.append(model.mel(torch.from_numpy(row)[None])[0])
    return found, {"hours": round(windows * pipeline.plan.hop / info.sample_rate / 3600, 3), "windows": windows,
                   "hard": len(found)}
