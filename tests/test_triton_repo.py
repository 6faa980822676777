"""diffres/triton.py: the Triton model repository, checked against Triton's config proto and the ONNX graph.

`config.pbtxt` is parsed with Triton's own ModelConfig message (shipped in tritonclient), and its
tensors are compared with the graph as the `onnx` package reads it (not onnxruntime, which the
generator uses), so the check is independent of the code it checks. Triton itself is not run here:
it is not installable on this machine (no server binary on PyPI, no container registry).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from diffres import contract as c
from diffres import triton
from diffres.models import MODELS_DIR
from tests.tiny_model import build as build_tiny

onnx = pytest.importorskip("onnx", reason="the onnx package reads the graph independently (pip install -e '.[train]')")
text_format = pytest.importorskip("google.protobuf.text_format", reason="protobuf parses config.pbtxt ('.[interop]')")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="Triton's ModelConfig proto comes with tritonclient ('.[interop]')")

ROOT = Path(__file__).resolve().parents[1]
ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}


def shipped_models() -> list[Path]:
    return sorted(MODELS_DIR.glob("*.onnx"))


def parse_config(folder: Path) -> Any:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def graph_tensors(path: Path) -> dict[str, tuple[str, list[int | str]]]:
    """name -> (Triton datatype, dims incl. batch; symbolic dims as their names)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: (ONNX_TO_TRITON[v.type.tensor_type.elem_type],
                     [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in [*graph.input, *graph.output]}


def check_folder(folder: Path, source: Path, max_batch_size: int) -> None:
    """Structure, labels and every tensor of config.pbtxt against the ONNX graph."""
    assert (folder / "1" / "model.onnx").read_bytes() == source.read_bytes()
    model = onnx.load(str(source), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert (folder / "labels.txt").read_text().splitlines() == json.loads(meta["labels"])

    cfg = parse_config(folder)
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == (folder.name, "onnxruntime_onnx", max_batch_size)
    assert cfg.HasField("dynamic_batching")
    assert [t.name for t in cfg.input] == list(c.INPUTS) and [t.name for t in cfg.output] == list(c.OUTPUTS)
    graph = graph_tensors(source)
    for tensor in [*cfg.input, *cfg.output]:
        datatype, dims = graph[tensor.name]
        assert model_config_pb2.DataType.Name(tensor.data_type) == datatype == f"TYPE_{c.DATATYPES[tensor.name]}"
        assert isinstance(dims[0], str), f"{tensor.name}: the batch dim must be dynamic for max_batch_size"
        expected = [d if isinstance(d, int) and d > 0 else -1 for d in dims[1:]]
        if expected:
            assert list(tensor.dims) == expected and not tensor.HasField("reshape"), tensor.name
        else:  # a [batch] tensor: Triton needs dims [1], reshaped to the graph's per-row scalar
            assert list(tensor.dims) == [1] and tensor.HasField("reshape") and list(tensor.reshape.shape) == []
    logits = next(t for t in cfg.output if t.name == c.LOGITS)
    assert logits.label_filename == "labels.txt" and list(logits.dims) == [len(json.loads(meta["labels"]))]
    assert cfg.version_policy.latest.num_versions == 1  # Triton's default, written out (diffres serve reads it)


def test_repository_for_the_shipped_models(tmp_path: Path) -> None:
    models = shipped_models()
    if not models:
        pytest.skip("no models/*.onnx in this checkout")
    assert triton.main(["--models", str(MODELS_DIR), "--out", str(tmp_path), "--max-batch-size", "8"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.stem for p in models)
    for path in models:
        check_folder(tmp_path / path.stem, path, max_batch_size=8)


def test_repository_for_a_tiny_contract_model(tmp_path: Path) -> None:
    """Runs without shipped models: a graph of the contract built in the test."""
    source = build_tiny(tmp_path / "models" / "tiny.onnx")
    folder = triton.write_model(source, tmp_path / "repo", max_batch_size=4, queue_delay_us=100)
    check_folder(folder, source, max_batch_size=4)
    assert parse_config(folder).dynamic_batching.max_queue_delay_microseconds == 100


def test_rewriting_replaces_a_stale_model_folder(tmp_path: Path) -> None:
    source = build_tiny(tmp_path / "models" / "tiny.onnx")
    stale = tmp_path / "repo" / "tiny" / "2"
    stale.mkdir(parents=True)
    triton.write_model(source, tmp_path / "repo")
    assert sorted(p.name for p in (tmp_path / "repo" / "tiny").iterdir()) == ["1", "config.pbtxt", "labels.txt"]


def test_adding_a_version_keeps_the_others_and_the_policy(tmp_path: Path) -> None:
    """--version N: a new version beside the old ones, config.pbtxt's version_policy kept, no stray files
    (a serving repository only ever sees whole files); the server reads the same policy."""
    from diffres.server.repository import policy_from_config, scan

    source = build_tiny(tmp_path / "models" / "tiny.onnx")
    repo = tmp_path / "repo"
    folder = triton.write_model(source, repo)
    config = folder / "config.pbtxt"
    config.write_text(config.read_text().replace("latest: { num_versions: 1 }", "latest: { num_versions: 2 }"))
    assert triton.main(["--models", str(source.parent), "--out", str(repo), "--version", "3"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["1", "3", "config.pbtxt", "labels.txt"]
    assert (folder / "3" / "model.onnx").read_bytes() == source.read_bytes()
    assert parse_config(folder).version_policy.latest.num_versions == 2
    policy = policy_from_config(config.read_text())
    assert policy is not None and str(policy) == "latest:2"
    assert scan(repo, {})["tiny"].wanted == {1, 3}
    triton.write_model(source, repo, version=3)  # the same version again: the file replaced in place
    assert sorted(p.name for p in (folder / "3").iterdir()) == ["model.onnx"]


def test_a_model_off_the_contract_is_refused(tmp_path: Path) -> None:
    source = build_tiny(tmp_path / "tiny.onnx")
    model = onnx.load(str(source))
    model.graph.output[0].name = "scores"
    model.graph.node[[i for i, n in enumerate(model.graph.node) if c.LOGITS in n.output][0]].output[0] = "scores"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    with pytest.raises(c.ContractError, match="expected inputs"):
        triton.write_model(tmp_path / "renamed.onnx", tmp_path / "repo")
    assert not (tmp_path / "repo" / "renamed").exists()


def test_cli_without_models_fails_clearly(tmp_path: Path) -> None:
    assert triton.main(["--models", str(tmp_path), "--out", str(tmp_path / "repo")]) == 2


def test_the_generator_never_imports_torch() -> None:
    code = "import sys, diffres.triton; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
