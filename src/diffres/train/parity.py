"""PyTorch vs onnxruntime at lengths never used at export, mixed-length batches, and int8 accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from diffres.train.requires import torch  # the `train` extra, or an error naming it

from diffres.train.classifier import AudioClassifier
from diffres.train.data import load_audio
from diffres.contract import LOGITS, ModelInfo
from diffres.runner import OnnxModel

PARITY_SECONDS = (0.2, 0.73, 1.9, 4.41, 17.3, 61.7, 600.0)  # 0.2 s to 10 min; export traced 3.01 s
PARITY_BATCHES = (1, 4)
MIXED_SECONDS = (0.2, 0.73, 1.9, 4.41, 17.3, 60.0)  # one padded batch, each row against itself alone
TOLERANCE = 1e-4


@dataclass
class ParityRow:
    """One check: `full` rows all `seconds` long; `mixed` one row of a padded mixed-length batch."""

    kind: str
    seconds: float
    batch: int
    max_logit_diff: float  # ONNX vs PyTorch (full); padded row vs the same row alone at batch 1 (mixed)
    frames_in: int
    frames_out: int
    expected_frames_out: int

    @property
    def ok(self) -> bool:
        return self.max_logit_diff <= TOLERANCE and self.frames_out == self.expected_frames_out


def expected_frames_out(info: ModelInfo, n_samples: int) -> int:
    """t = T - floor(delta * T) (DiffRes and pooling), T (full), or the longer hop's T (ChangeHopSize)."""
    return info.frames_out(n_samples)


@torch.no_grad()
def check_parity(model: AudioClassifier, onnx_path: str, seed: int = 0) -> list[ParityRow]:
    """Every row full length (what an old client sends): ONNX logits against PyTorch."""
    onnx = OnnxModel.load(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    sr = model.cfg.frontend.sample_rate
    rows = []
    for seconds in PARITY_SECONDS:
        for batch in PARITY_BATCHES:
            wave = 0.1 * torch.randn(batch, int(seconds * sr), generator=gen)
            ref = model(wave)[0].numpy()
            out = onnx.run(list(wave.numpy()), outputs=[LOGITS])
            diff = max(float(np.abs(o.logits - r).max()) for o, r in zip(out, ref))
            rows.append(ParityRow("full", seconds, batch, diff, out[0].frames_in, out[0].frames_out,
                                  expected_frames_out(onnx.info, wave.shape[1])))
    return rows


@torch.no_grad()
def check_mixed_batch(model: AudioClassifier, onnx_path: str, seed: int = 1) -> list[ParityRow]:
    """One batch of rows from 0.2 s to 60 s padded to the longest, run with `lengths`: each row must
    give what it gives alone at batch 1 (ONNX) and what PyTorch gives for it alone."""
    onnx = OnnxModel.load(onnx_path)
    rng = np.random.default_rng(seed)
    sr = model.cfg.frontend.sample_rate
    waves = [(0.1 * rng.standard_normal(int(s * sr))).astype(np.float32) for s in MIXED_SECONDS]
    batched = onnx.run(waves, outputs=[LOGITS])
    rows = []
    for seconds, wave, row in zip(MIXED_SECONDS, waves, batched):
        [alone] = onnx.run([wave], outputs=[LOGITS])
        ref = model(torch.from_numpy(wave)[None])[0][0].numpy()
        diff = max(float(np.abs(row.logits - alone.logits).max()), float(np.abs(row.logits - ref).max()))
        expected = expected_frames_out(onnx.info, len(wave))
        frames_out = row.frames_out if row.frames_out == alone.frames_out else -1
        rows.append(ParityRow("mixed", seconds, len(waves), diff, row.frames_in, frames_out, expected))
    return rows


def onnx_accuracy(onnx_path: str, paths: list[str], labels: list[int], sample_rate: int) -> float:
    """Accuracy of an ONNX model on clips, each run whole at batch 1 (as the service does)."""
    onnx = OnnxModel.load(onnx_path)
    hits = 0
    for path, label in zip(paths, labels):
        [out] = onnx.run([load_audio(path, sample_rate)], outputs=[LOGITS])
        hits += int(out.logits.argmax() == label)
    return hits / len(paths)
