"""ONNX export: symbolic lengths, `lengths` parity, determinism, strict metadata; the shipped models."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from diffres.contract import (
    CONTRACT_VERSION,
    INPUTS,
    LOGITS,
    MAX_WORD_S,
    METADATA_KEYS,
    OUTPUTS,
    ContractError,
    ModelInfo,
)
from diffres.models import MODELS_DIR
from diffres.runner import OnnxModel
from diffres.session import make_session
from diffres.train.classifier import AudioClassifier
from diffres.train.config import FrontendConfig, ModelConfig
from diffres.train.data import load_audio
from diffres.train.onnx_export import EXAMPLE_SECONDS, OPSET, export_onnx, model_info
from diffres.train.parity import check_mixed_batch

ROOT = Path(__file__).resolve().parents[1]
SR = 8000


@pytest.fixture(scope="module", params=["diffres", "changehop", "diffres-pcen"])
def exported(request, tmp_path_factory) -> tuple[AudioClassifier, str]:
    torch.manual_seed(0)
    resolution, _, compression = request.param.partition("-")
    cfg = ModelConfig(frontend=FrontendConfig(sample_rate=SR, n_mels=32, compression=compression or "log"),
                      resolution=resolution, delta=0.75, n_classes=5, backbone_width=8,
                      clip_norm=resolution == "changehop")
    model = AudioClassifier(cfg).eval()
    # BatchNorm statistics away from (0, 1), so parity also covers folded normalisation and padding
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.bias.data.normal_(0, 0.5)
    for p in model.compress.parameters():  # pcen: per-bin values (kept in range), not their shared start
        p.data.mul_(torch.empty_like(p).uniform_(0.6, 1.0))
    path = str(tmp_path_factory.mktemp("onnx") / "m.onnx")
    export_onnx(model, path, model_info(model, list("abcde"), 1.0).to_metadata())
    return model, path


@pytest.mark.parametrize("seconds", [0.005, 0.012, 0.2, 1.37, 7.71, 95.3])  # none is the export length; 1 and 2 frames
@pytest.mark.parametrize("batch", [1, 4])
def test_parity_at_lengths_not_used_at_export(exported, seconds: float, batch: int) -> None:
    """Every row full length (what an old client sends): ONNX equals PyTorch."""
    assert seconds != EXAMPLE_SECONDS
    model, path = exported
    wave = 0.1 * torch.randn(batch, int(seconds * SR), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(wave)
    out = OnnxModel.load(path).run_padded(wave.numpy(), outputs=OUTPUTS)
    assert np.abs(out[LOGITS] - ref[0].numpy()).max() <= 1e-4
    np.testing.assert_allclose(out["importance"], ref[1].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["logmel"], ref[4].numpy(), atol=1e-4, rtol=1e-5)
    assert out["frames_in"].dtype == np.int64 and list(out["frames_in"]) == [wave.shape[1] // (SR // 100) + 1] * batch
    info = ModelInfo.from_metadata("m", make_session(path).get_modelmeta().custom_metadata_map)
    assert list(out["frames_out"]) == [info.frames_out(wave.shape[1])] * batch


def test_mixed_length_batch_matches_each_row_alone(exported) -> None:
    """0.2 s to 60 s padded into one batch with `lengths`: each row as alone (ONNX and PyTorch)."""
    model, path = exported
    rows = check_mixed_batch(model, path)
    assert len(rows) >= 6 and all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_long_batched_runs_are_deterministic(exported) -> None:
    """Guards the warp against racy multi-threaded scatters (onnxruntime's ScatterND is one)."""
    _, path = exported
    onnx_model = OnnxModel.load(path, intra_op_threads=2)
    rng = np.random.default_rng(0)
    rows = [(0.1 * rng.standard_normal(n * SR)).astype(np.float32) for n in (300, 200, 290, 10)]
    first = [r.logits for r in onnx_model.run(rows, outputs=[LOGITS])]
    for _ in range(3):
        np.testing.assert_array_equal([r.logits for r in onnx_model.run(rows, outputs=[LOGITS])], first)


def test_recovered_checkpoint_reproduces_the_graph(exported) -> None:
    """export.recover unfolds BatchNorm from the graph's convs and finds clip_norm by trial: the rebuilt
    PyTorch model gives the original's logits (the changehop fixture has clip_norm on)."""
    from diffres.train.recover import recover

    model, path = exported
    rebuilt, ckpt = recover(Path(path))
    assert ckpt["model_config"]["clip_norm"] == model.cfg.clip_norm
    x = torch.randn(3, int(1.3 * SR)) * torch.tensor([[0.05], [0.2], [0.5]])
    lengths = torch.tensor([x.shape[1], x.shape[1] // 2, x.shape[1] // 3])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, lengths)[0], model(x, lengths)[0], rtol=1e-4, atol=1e-4)


def test_a_graph_of_contract_3_is_recovered_with_the_onset_search_it_was_served_with(exported, tmp_path) -> None:
    """Contract 3 had no max_word_s: such a graph recovers with the default it was served with, so a re-export
    (contract 4) answers as the old graph did."""
    from diffres.train.recover import recover

    _, path = exported
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props if p.key != "max_word_s"}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**meta, "contract": "3"})
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    with pytest.raises(ContractError, match="max_word_s"):
        ModelInfo.from_metadata("old", {**meta, "contract": CONTRACT_VERSION})
    _, ckpt = recover(old)
    assert ckpt["max_word_s"] == MAX_WORD_S


def test_graph_is_valid_with_symbolic_axes(exported) -> None:
    _, path = exported
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    assert [i.name for i in proto.graph.input] == list(INPUTS)
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    wave, lengths = (i.type.tensor_type for i in proto.graph.input)
    assert [d.dim_param != "" for d in wave.shape.dim] == [True, True]  # batch and samples both symbolic
    assert wave.shape.dim[0].dim_param == lengths.shape.dim[0].dim_param  # one batch axis
    assert lengths.elem_type == onnx.TensorProto.INT64
    assert {p.key for p in proto.metadata_props} >= set(METADATA_KEYS)


def test_metadata_is_parsed_strictly(exported) -> None:
    """A model missing a key the exporter always writes is refused, not served with defaults."""
    _, path = exported
    meta = dict(make_session(path).get_modelmeta().custom_metadata_map)
    ModelInfo.from_metadata("m", meta)
    for key in ("labels", "delta", "hop_ms", "contract", "max_word_s"):
        broken = {k: v for k, v in meta.items() if k != key}
        with pytest.raises(ContractError, match=key):
            ModelInfo.from_metadata("m", broken)
    with pytest.raises(ContractError, match="contract version"):
        ModelInfo.from_metadata("m", {**meta, "contract": "1"})
    with pytest.raises(ContractError, match="delta"):
        ModelInfo.from_metadata("m", {**meta, "delta": "1.5"})


@pytest.mark.parametrize("name,sample_rate,n_labels,background", [("keywords", 16000, 7, "_background_"),
                                                                  ("digits", 8000, 10, "")])
def test_shipped_models_load_with_complete_metadata(name: str, sample_rate: int, n_labels: int,
                                                     background: str) -> None:
    path = MODELS_DIR / f"{name}.onnx"
    assert path.exists(), f"shipped model {path} is missing"
    onnx_model = OnnxModel.load(path)
    info = onnx_model.info
    assert len(info.labels) == n_labels and info.sample_rate == sample_rate and info.delta == 0.5
    assert info.background_label == background and 0.3 <= info.min_score <= 0.95
    rows = [np.zeros(sample_rate, np.float32), np.zeros(sample_rate // 3, np.float32)]
    out = onnx_model.run(rows)
    for row, n in zip(out, (sample_rate, sample_rate // 3)):
        assert row.logits.shape == (n_labels,) and row.frames_out == info.frames_out(n)
    report = json.loads((path.with_suffix(".export.json")).read_text())
    assert report["parity_passed"] and len({(r["seconds"]) for r in report["parity"]}) >= 6
    assert {r["kind"] for r in report["parity"]} == {"full", "mixed"}


@pytest.mark.parametrize("name", ["keywords", "digits"])
def test_shipped_models_run_at_lengths_around_hop_and_window(name: str) -> None:
    """The frontend cuts frames by reshaping into hop-sized chunks: rows of 1 sample, and one sample
    either side of the hop and of the window, run in one padded batch with finite logits."""
    onnx_model = OnnxModel.load(MODELS_DIR / f"{name}.onnx")
    info = onnx_model.info
    hop, win = round(info.sample_rate * info.hop_ms / 1000), round(info.sample_rate * info.win_ms / 1000)
    lengths = [1, hop - 1, hop, hop + 1, win - 1, win, win + 1, 3 * win + 7]
    rng = np.random.default_rng(0)
    out = onnx_model.run([(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths])
    for row, n in zip(out, lengths):
        assert np.isfinite(row.logits).all() and row.frames_out == info.frames_out(n), n


@pytest.mark.parametrize("name,pattern", [("keywords", "*/*.flac"), ("digits", "*/*.wav")])
def test_shipped_models_recognise_real_clips(name: str, pattern: str) -> None:
    """A slice of real clips, all in one padded batch (the service's path), mostly right."""
    data = ROOT.parent / "shared" / "data" / name
    if not data.exists():
        pytest.skip(f"{data} not present (real audio lives in ../shared/data beside the repo)")
    onnx_model = OnnxModel.load(MODELS_DIR / f"{name}.onnx")
    info = onnx_model.info
    files = sorted(data.glob(pattern))[::97][:20]
    out = onnx_model.run([load_audio(str(f), info.sample_rate) for f in files], outputs=[LOGITS])
    hits = sum(info.labels[int(r.logits.argmax())] == f.parent.name for r, f in zip(out, files))
    assert hits >= 0.8 * len(files)


def test_overflowing_audio_does_not_crash_the_graph(exported) -> None:
    """Samples near 1e20 overflow the mel power to inf; the graph must still run (NaN out, no crash),
    and the overflowing row must not spoil its neighbour in the batch."""
    _, path = exported
    wave = np.zeros((2, SR), np.float32)
    wave[0, 100:4000] = 1e20
    wave[1] = 0.1 * np.random.default_rng(0).standard_normal(SR)
    out = OnnxModel.load(path).run(list(wave), outputs=[LOGITS])
    assert out[1].logits.shape == (5,) and np.isfinite(out[1].logits).all()
