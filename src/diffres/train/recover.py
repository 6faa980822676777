"""python -m diffres.train.recover models/keywords.onnx --out runs/keywords/best.pt

Rebuilds a checkpoint (config, labels, weights) from an exported graph, so a shipped model can be
re-exported when the graph's code changes but its weights do not (a faster warp, say) without
retraining, and without the training run's checkpoint at hand.

The exporter folds each BatchNorm into the conv before it; here each conv gets its folded weight,
and its BatchNorm becomes the identity plus the folded bias (running variance 1 - eps, so the
normalisation divides by exactly 1). The frontend's tensors (DFT, mel filterbank) are rebuilt from the
config and must equal the graph's where it holds them by name (a graph of an older frontend layout
is judged by its logits alone). Options the graph holds no tensor for (clip normalisation) are tried
both ways; the rebuilt model is checked against the graph with onnxruntime before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from diffres.train.requires import onnx  # the `train` extra, or an error naming it
import torch
from onnx import numpy_helper
from torch import nn

from diffres.train.classifier import AudioClassifier
from diffres.train.config import FrontendConfig, ModelConfig
from diffres.contract import CONTRACT_VERSION, LENGTHS, MAX_WORD_S, WAVEFORM, ModelInfo
from diffres.session import make_session

TOLERANCE = 1e-3  # largest logit difference between the graph and the rebuilt model


def read_graph(path: Path) -> tuple[ModelInfo, dict[str, np.ndarray]]:
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("contract") == "2":  # served with half-window hops and one window: keep that rule
        meta = {**meta, "contract": "3", "event_windows": "1", "window_hop_s": str(float(meta["clip_seconds"]) / 2)}
    if meta.get("contract") == "3":  # served with the default onset search: keep it
        meta = {**meta, "contract": CONTRACT_VERSION, "max_word_s": str(MAX_WORD_S)}
    return ModelInfo.from_metadata(path.stem, meta), {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def model_config(info: ModelInfo, weights: dict[str, np.ndarray], clip_norm: bool) -> ModelConfig:
    """The config the graph was exported from: metadata, plus widths read off the weight shapes."""
    compression = info.frontend.split("/")[-1]
    front = FrontendConfig(sample_rate=info.sample_rate, win_ms=info.win_ms, hop_ms=info.hop_ms,
                           n_mels=info.n_mels, compression=compression)  # type: ignore[arg-type]
    cfg = ModelConfig(frontend=front, resolution=info.resolution, delta=info.delta,  # type: ignore[arg-type]
                      n_classes=len(info.labels), backbone_width=weights["backbone.stem.0.weight"].shape[0],
                      clip_norm=clip_norm)
    if info.resolution == "diffres":
        cfg.estimator_channels = weights["resolution.estimator.inp.0.weight"].shape[0]
        cfg.estimator_blocks = sum(1 for k in weights if k.startswith("resolution.estimator.blocks.")
                                   and k.endswith(".conv.weight"))
    return cfg


def load_folded(model: AudioClassifier, weights: dict[str, np.ndarray]) -> None:
    """Copy the graph's weights; a BatchNorm without its own statistics in the graph was folded into
    the conv registered just before it (every conv-norm pair in diffres.train is written in that order)."""
    state = model.state_dict()
    last_conv = ""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            last_conv = name
        if not isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) or f"{name}.running_mean" in weights:
            continue
        folded_bias = weights.get(f"{last_conv}.weight_bias", np.zeros(module.num_features, np.float32))
        state[f"{name}.weight"] = torch.ones(module.num_features)
        state[f"{name}.bias"] = torch.from_numpy(folded_bias.copy())
        state[f"{name}.running_mean"] = torch.zeros(module.num_features)
        state[f"{name}.running_var"] = torch.full((module.num_features,), 1.0 - module.eps)
    for key in state:
        if key in weights:
            state[key] = torch.from_numpy(weights[key].copy()).reshape(state[key].shape)
    model.load_state_dict(state)


def max_logit_difference(model: AudioClassifier, path: Path, sample_rate: int) -> float:
    """Rebuilt model vs the graph: noise at two levels and two lengths in one padded batch (a pure tone
    would be ill-conditioned: its empty mel bins sit at log(eps), where float rounding is magnified)."""
    n = int(1.7 * sample_rate)
    x = (np.random.default_rng(0).standard_normal((2, n)) * np.array([[0.1], [0.3]])).astype(np.float32)
    lengths = np.array([n, n * 2 // 3], np.int64)
    graph = make_session(path, providers=["CPUExecutionProvider"]).run(None, {WAVEFORM: x, LENGTHS: lengths})[0]
    with torch.no_grad():
        rebuilt = model(torch.from_numpy(x), torch.from_numpy(lengths))[0].numpy()
    return float(np.abs(graph - rebuilt).max())


def recover(path: Path) -> tuple[AudioClassifier, dict]:
    info, weights = read_graph(path)
    tried = {}
    for clip_norm in (False, True):
        cfg = model_config(info, weights, clip_norm)
        model = AudioClassifier(cfg).eval()
        for name, buffer in model.mel.named_buffers():  # a graph of an older frontend layout has none of these
            if f"mel.{name}" in weights and not np.allclose(buffer.numpy(), weights[f"mel.{name}"], atol=1e-6):
                raise ValueError(f"the graph's frontend tensor mel.{name} differs from the config's "
                                 "(window or mel changed)")
        load_folded(model, weights)
        tried[clip_norm] = max_logit_difference(model, path, info.sample_rate)
        if tried[clip_norm] <= TOLERANCE:
            ckpt = {"model_config": cfg.to_dict(), "state_dict": model.state_dict(), "labels": list(info.labels),
                    "train_config": {"clip_seconds": info.clip_seconds}, "background_label": info.background_label,
                    "min_score": info.min_score, "window_hop_s": info.window_hop_s or None,
                    "event_windows": info.event_windows, "max_word_s": info.max_word_s,
                    "recovered_from": {"path": str(path), "version": info.version,
                                       "max_logit_difference": tried[clip_norm]}}
            return model, ckpt
    raise ValueError(f"no config reproduces the graph (largest logit difference by clip_norm: {tried})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graph", type=Path, help="an exported model, e.g. models/keywords.onnx")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write, e.g. runs/keywords/best.pt")
    a = p.parse_args(argv)
    try:
        _, ckpt = recover(a.graph)
    except (ValueError, KeyError) as exc:
        print(f"cannot recover {a.graph}: {exc}", file=sys.stderr)
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, a.out)
    report = a.graph.with_suffix(".export.json")  # carries the training metrics to the re-export's report
    if report.exists() and "training" in (previous := json.loads(report.read_text())):
        (a.out.parent / "metrics.json").write_text(json.dumps(previous["training"], indent=1))
    difference = ckpt["recovered_from"]["max_logit_difference"]
    print(f"recovered {a.graph} -> {a.out}: largest logit difference {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
