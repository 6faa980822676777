"""PyTorch vs onnxruntime at lengths never used at export, and the int8 accuracy check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from model.classifier import AudioClassifier, effective_frontend
from model.config import delta_fraction, frames_out
from model.data import load_audio

PARITY_SECONDS = (0.2, 0.73, 1.9, 4.41, 17.3, 61.7, 600.0)  # 0.2 s to 10 min; export traced 3.01 s
PARITY_BATCHES = (1, 4)
TOLERANCE = 1e-4


@dataclass
class ParityRow:
    seconds: float
    batch: int
    max_logit_diff: float
    frames_in: int
    frames_out: int
    expected_frames_out: int

    @property
    def ok(self) -> bool:
        return self.max_logit_diff <= TOLERANCE and self.frames_out == self.expected_frames_out


def session(path: str, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def expected_frames_out(model: AudioClassifier, n_samples: int) -> int:
    """t = T - floor(delta * T) for DiffRes and pooling; ChangeHopSize counts its own longer hop."""
    cfg = model.cfg
    if cfg.resolution == "full":
        return n_samples // cfg.frontend.hop_length + 1
    if cfg.resolution == "changehop":
        return n_samples // effective_frontend(cfg).hop_length + 1
    return frames_out(n_samples // cfg.frontend.hop_length + 1, delta_fraction(cfg.delta))


@torch.no_grad()
def check_parity(model: AudioClassifier, onnx_path: str, seed: int = 0) -> list[ParityRow]:
    sess = session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    sr = model.cfg.frontend.sample_rate
    rows = []
    for seconds in PARITY_SECONDS:
        for batch in PARITY_BATCHES:
            wave = 0.1 * torch.randn(batch, int(seconds * sr), generator=gen)
            ref = model(wave)
            logits, _, frames_in, frames_out = sess.run(None, {"waveform": wave.numpy()})
            rows.append(ParityRow(seconds, batch, float(np.abs(logits - ref[0].numpy()).max()),
                                  int(frames_in[0]), int(frames_out[0]), expected_frames_out(model, wave.shape[1])))
    return rows


def onnx_accuracy(onnx_path: str, paths: list[str], labels: list[int], sample_rate: int) -> float:
    """Accuracy of an ONNX model on clips, each run whole at batch 1 (as the service does)."""
    sess = session(onnx_path)
    hits = 0
    for path, label in zip(paths, labels):
        wave = load_audio(path, sample_rate)[None]
        hits += int(sess.run(["logits"], {"waveform": wave})[0].argmax() == label)
    return hits / len(paths)
