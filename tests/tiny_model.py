"""A tiny ONNX model of the current contract, built with onnx.helper (no torch), for runtime and batching tests.

It follows the contract exactly: rows padded to the longest with `lengths` give what each row gives
alone. Its logits depend on the row's content (mean, mean square, peak of the valid samples), so a
row mixed up with its batch-mate, or padding leaking into a row, changes the answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffres.contract import (
    CONTRACT_VERSION,
    FRAMES_IN,
    FRAMES_OUT,
    IMPORTANCE,
    LENGTHS,
    LOGITS,
    LOGMEL,
    MAX_WORD_S,
    WAVEFORM,
)

LABELS = ("low", "mid", "high")
SAMPLE_RATE, HOP_MS, N_MELS, DELTA = 8000, 10.0, 4, 0.5  # hop 80 samples; frames_out = T - T // 2


BACKGROUND = "_background_"
# With a background label: its logit is 3 - 20 * peak, so quiet windows (peak < ~0.1) are background
# and a window holding any loud sample is not (a 0.5-amplitude sine makes "mid" at ~0.72).
BACKGROUND_W, BACKGROUND_B = [0.0, 0.0, -20.0], 3.0


def build(path: Path, *, clip_seconds: float = 0.5, name_version: str = "tiny-1", background: bool = False,
          min_score: float = 0.5, window_hop_s: float | None = None, event_windows: int = 1,
          max_word_s: float = MAX_WORD_S) -> Path:
    """Write the model to `path` and return it; `background` adds a background label (last); the event rule
    defaults to half-window hops and one window."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hop = round(SAMPLE_RATE * HOP_MS / 1000)
    labels = (*LABELS, BACKGROUND) if background else LABELS
    weights = np.array([[4.0, -2.0, 1.0], [-3.0, 8.0, 2.0], [1.0, 1.0, -5.0]])
    bias = np.array([0.1, -0.2, 0.3])
    if background:
        weights = np.column_stack([weights, BACKGROUND_W])
        bias = np.append(bias, BACKGROUND_B)
    init = [numpy_helper.from_array(np.asarray(v, dtype=dt), name) for name, v, dt in [
        ("zero", 0, np.int64), ("one", 1, np.int64), ("two", 2, np.int64), ("hop", hop, np.int64),
        ("ax0", [0], np.int64), ("ax1", [1], np.int64), ("ax2", [2], np.int64),
        ("W", weights, np.float32), ("b", bias, np.float32), ("half", 0.5, np.float32),
        ("mel_ones", np.ones((1, 1, N_MELS)), np.float32)]]
    n = helper.make_node
    nodes = [
        n("Shape", [WAVEFORM], ["shape"]), n("Gather", ["shape", "one"], ["N"], axis=0),
        n("Range", ["zero", "N", "one"], ["idx"]), n("Unsqueeze", ["idx", "ax0"], ["idx_row"]),
        n("Unsqueeze", [LENGTHS, "ax1"], ["len_col"]), n("Less", ["idx_row", "len_col"], ["valid"]),
        n("Cast", ["valid"], ["maskf"], to=TensorProto.FLOAT), n("Mul", [WAVEFORM, "maskf"], ["xm"]),
        n("Cast", [LENGTHS], ["lenf"], to=TensorProto.FLOAT),
        n("ReduceSum", ["xm", "ax1"], ["s1"], keepdims=0), n("Div", ["s1", "lenf"], ["mean"]),
        n("Mul", ["xm", "xm"], ["sq"]), n("ReduceSum", ["sq", "ax1"], ["s2"], keepdims=0),
        n("Div", ["s2", "lenf"], ["power"]), n("Abs", ["xm"], ["ab"]),
        n("ReduceMax", ["ab", "ax1"], ["peak"], keepdims=0),
        n("Unsqueeze", ["mean", "ax1"], ["f1"]), n("Unsqueeze", ["power", "ax1"], ["f2"]),
        n("Unsqueeze", ["peak", "ax1"], ["f3"]), n("Concat", ["f1", "f2", "f3"], ["feats"], axis=1),
        n("MatMul", ["feats", "W"], ["mm"]), n("Add", ["mm", "b"], [LOGITS]),
        n("Div", [LENGTHS, "hop"], ["lq"]), n("Add", ["lq", "one"], [FRAMES_IN]),
        n("Div", [FRAMES_IN, "two"], ["fhalf"]), n("Sub", [FRAMES_IN, "fhalf"], [FRAMES_OUT]),
        n("Div", ["N", "hop"], ["Nq"]), n("Add", ["Nq", "one"], ["T"]),
        n("Range", ["zero", "T", "one"], ["tidx"]), n("Unsqueeze", ["tidx", "ax0"], ["t_row"]),
        n("Unsqueeze", [FRAMES_IN, "ax1"], ["fin_col"]), n("Less", ["t_row", "fin_col"], ["fvalid"]),
        n("Cast", ["fvalid"], ["fmask"], to=TensorProto.FLOAT), n("Add", ["peak", "half"], ["score"]),
        n("Unsqueeze", ["score", "ax1"], ["score_col"]), n("Mul", ["fmask", "score_col"], [IMPORTANCE]),
        n("Unsqueeze", [IMPORTANCE, "ax2"], ["imp3"]), n("Mul", ["imp3", "mel_ones"], [LOGMEL]),
    ]
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    graph = helper.make_graph(
        nodes, "tiny_contract",
        [helper.make_tensor_value_info(WAVEFORM, f32, ["batch", "samples"]),
         helper.make_tensor_value_info(LENGTHS, i64, ["batch"])],
        [helper.make_tensor_value_info(LOGITS, f32, ["batch", len(labels)]),
         helper.make_tensor_value_info(IMPORTANCE, f32, ["batch", "frames"]),
         helper.make_tensor_value_info(FRAMES_IN, i64, ["batch"]),
         helper.make_tensor_value_info(FRAMES_OUT, i64, ["batch"]),
         helper.make_tensor_value_info(LOGMEL, f32, ["batch", "frames", N_MELS])],
        init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = {"contract": CONTRACT_VERSION, "labels": json.dumps(list(labels)), "sample_rate": str(SAMPLE_RATE),
            "delta": str(DELTA), "hop_ms": str(HOP_MS), "win_ms": "25.0", "n_mels": str(N_MELS),
            "clip_seconds": str(clip_seconds), "frontend": "tiny", "resolution": "diffres", "version": name_version,
            "background_label": BACKGROUND if background else "", "min_score": str(min_score),
            "window_hop_s": str(window_hop_s or clip_seconds / 2), "event_windows": str(event_windows),
            "max_word_s": str(max_word_s)}
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
