"""Export a checkpoint to ONNX with symbolic batch and length, and embed labels and audio settings."""

from __future__ import annotations

import hashlib
import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from diffres.train.requires import onnx  # the `train` extra, or an error naming it
import torch
from torch.export import Dim

from diffres.train.classifier import AudioClassifier
from diffres.contract import INPUTS, MAX_WORD_S, OUTPUTS, ModelInfo

OPSET = 18
EXAMPLE_SECONDS = 3.01  # the one length traced at export; parity is checked at others


def package_version() -> str:
    try:
        return version("diffres")
    except PackageNotFoundError:
        return "0.0.0"


def model_info(model: AudioClassifier, labels: list[str], clip_seconds: float, name: str = "",
               background_label: str = "", min_score: float = 0.5, window_hop_s: float | None = None,
               event_windows: int = 1, max_word_s: float = MAX_WORD_S) -> ModelInfo:
    """Everything a runtime needs to feed the model and name its outputs (the contract's metadata).

    The version's digest covers the weights and the event rule: both decide what the model answers."""
    cfg = model.cfg
    window_hop_s = window_hop_s or clip_seconds / 2
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes())
    digest.update(f"rule {min_score} {window_hop_s} {event_windows} {max_word_s}".encode())
    info = ModelInfo(name=name, labels=tuple(labels), sample_rate=cfg.frontend.sample_rate, delta=cfg.delta,
                     hop_ms=cfg.frontend.hop_ms, win_ms=cfg.frontend.win_ms, n_mels=cfg.frontend.n_mels,
                     clip_seconds=clip_seconds, frontend=f"logmel-dftfold/{cfg.frontend.compression}",
                     resolution=cfg.resolution, version=f"{package_version()}+{digest.hexdigest()[:10]}",
                     background_label=background_label, min_score=min_score,
                     window_hop_s=window_hop_s, event_windows=event_windows, max_word_s=max_word_s)
    info.check()
    return info


def model_metadata(model: AudioClassifier, ckpt: dict) -> dict[str, str]:
    """The ONNX metadata_props of a trained checkpoint: its event rule as training chose it on validation
    (a checkpoint from before the rule was chosen: half-window hops, one window, the default onset search)."""
    return model_info(model, ckpt["labels"], ckpt["train_config"]["clip_seconds"],
                      background_label=ckpt.get("background_label", ""), min_score=ckpt.get("min_score", 0.5),
                      window_hop_s=ckpt.get("window_hop_s"), event_windows=ckpt.get("event_windows", 1),
                      max_word_s=ckpt.get("max_word_s", MAX_WORD_S)).to_metadata()


def name_axes(proto: onnx.ModelProto) -> None:
    """Call the exporter's symbols for the waveform's axes `batch` and `samples`, everywhere they appear.

    The axes are exported as Dim.DYNAMIC (named Dims make torch.export fail on some deltas' guards),
    which yields names like s16; readable names matter to Triton configs and to people.
    """
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {dims[0].dim_param: "batch", dims[1].dim_param: "samples"}
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in rename) + r")\b")
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: rename[m.group(1)], dim.dim_param)


def export_onnx(model: AudioClassifier, path: str | Path, metadata: dict[str, str]) -> None:
    """Trace at one example length; every size downstream stays symbolic (integer shape arithmetic)."""
    sr = model.cfg.frontend.sample_rate
    n = int(EXAMPLE_SECONDS * sr)
    example = (torch.randn(2, n), torch.tensor([n, n - sr // 3], dtype=torch.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, example, None, input_names=list(INPUTS), output_names=list(OUTPUTS), opset_version=OPSET,
            dynamo=True, dynamic_shapes=({0: Dim.DYNAMIC, 1: Dim.DYNAMIC}, {0: Dim.DYNAMIC}), optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    name_axes(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = ("DiffRes audio classifier: waveform [batch, samples] at sample_rate, lengths [batch] "
                        "valid samples per row -> logits (contract: diffres/contract.py)")
    onnx.checker.check_model(proto, full_check=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))

