"""Export a checkpoint to ONNX with symbolic batch and length, and embed labels and audio settings."""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import onnx
import torch
from torch.export import Dim

from model.classifier import AudioClassifier
from model.config import ModelConfig

OPSET = 18
EXAMPLE_SECONDS = 3.01  # the one length traced at export; parity is checked at others
INPUT = "waveform"
OUTPUTS = ["logits", "importance", "frames_in", "frames_out"]


def package_version() -> str:
    try:
        return version("diffres-service")
    except PackageNotFoundError:
        return "0.0.0"


def load_checkpoint(path: str | Path) -> tuple[AudioClassifier, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = AudioClassifier(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def model_metadata(model: AudioClassifier, ckpt: dict) -> dict[str, str]:
    """Everything a server needs to feed the model and name its outputs, as ONNX metadata props."""
    cfg = model.cfg
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return {
        "labels": json.dumps(ckpt["labels"]),
        "sample_rate": str(cfg.frontend.sample_rate),
        "delta": str(cfg.delta),
        "hop_ms": str(cfg.frontend.hop_ms),
        "win_ms": str(cfg.frontend.win_ms),
        "n_mels": str(cfg.frontend.n_mels),
        "clip_seconds": str(ckpt["train_config"]["clip_seconds"]),
        "frontend": f"logmel-dftconv/{cfg.frontend.compression}",
        "resolution": cfg.resolution,
        "version": f"{package_version()}+{digest.hexdigest()[:10]}",
    }


def export_onnx(model: AudioClassifier, path: str | Path, metadata: dict[str, str]) -> None:
    """Trace at one example length; every size downstream stays symbolic (integer shape arithmetic)."""
    sr = model.cfg.frontend.sample_rate
    example = torch.randn(2, int(EXAMPLE_SECONDS * sr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), None, input_names=[INPUT], output_names=OUTPUTS, opset_version=OPSET,
            dynamo=True, dynamic_shapes=({0: Dim.DYNAMIC, 1: Dim.DYNAMIC},), optimize=True, verbose=False,
        )
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "DiffRes audio classifier: waveform [batch, samples] at sample_rate -> logits"
    onnx.checker.check_model(proto, full_check=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))

