"""`python -m diffres.triton` (= `make triton-repo`): a Triton model repository for the exported ONNX models.

For each `NAME.onnx` of a model folder (default: the shipped models) it writes
`model_repository/NAME/1/model.onnx`, `NAME/labels.txt` and `NAME/config.pbtxt` for Triton's onnxruntime
backend. The same repository is what `diffres serve` reads (DIFFRES_MODEL_DIR; docs/repository.md),
so it serves as it is, config.pbtxt's version policy included (Triton's ModelVersionPolicy, read and
written here), and `--version N` adds a version to a repository a server is using: the other versions
stay, and every file is swapped in whole (written beside, then renamed), so a polling server never
reads half a file. Names and datatypes come from the contract (diffres/contract.py), dims from the
ONNX graph itself: with `max_batch_size` > 0 Triton's dims omit the batch dim, so the `[batch]` tensors (lengths, frames_in, frames_out) become dims [1] with a
reshape to a scalar. Reads the graph with onnxruntime (no torch, no onnx package).
Triton only batches requests of equal shape: requests with different `samples` run as separate
batches (a client can pad rows itself and send `lengths`; the contract keeps each row exact).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from diffres import contract as c
from diffres.models import MODELS_DIR
from diffres.runner import check_io
from diffres.session import make_session

if TYPE_CHECKING:
    from collections.abc import Callable

ORT_TYPES = {"FP32": "tensor(float)", "INT64": "tensor(int64)"}
LABEL_FILE = "labels.txt"
CONFIG_FILE = "config.pbtxt"


class PolicyError(ValueError):
    """A version policy that cannot be read (a config.pbtxt's, or DIFFRES_VERSION_POLICY)."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions on disk to serve (Triton's ModelVersionPolicy)."""

    kind: Literal["latest", "specific", "all"] = "latest"
    count: int = 1  # latest: how many of the highest versions
    versions: tuple[int, ...] = ()  # specific: exactly these

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve among those on disk."""
        on_disk = set(available)
        if self.kind == "all":
            return on_disk
        if self.kind == "specific":
            return on_disk & set(self.versions)
        return set(sorted(on_disk)[-self.count:])

    @property
    def pbtxt(self) -> str:
        """The policy as a config.pbtxt statement (Triton's ModelVersionPolicy)."""
        inner = {"latest": f"latest: {{ num_versions: {self.count} }}", "all": "all: { }",
                 "specific": f"specific: {{ versions: [{', '.join(map(str, self.versions))}] }}"}[self.kind]
        return f"version_policy: {{ {inner} }}"

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        return "all" if self.kind == "all" else ",".join(map(str, self.versions))


LATEST = VersionPolicy()


def _block(text: str, key: str) -> str | None:
    """The inside of `key { ... }` (or `key: { ... }`) in protobuf text, braces balanced; None if absent."""
    match = re.search(rf"\b{key}\s*:?\s*\{{", text)
    if match is None:
        return None
    depth, start = 1, match.end()
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise PolicyError(f"unbalanced braces after '{key}'")


def policy_from_config(text: str) -> VersionPolicy | None:
    """config.pbtxt's `version_policy` (latest { num_versions: N } / specific { versions: [..] } / all { }),
    None when it has none (Triton's default then applies: latest 1)."""
    text = re.sub(r"#[^\n]*", "", text)
    policy = _block(text, "version_policy")
    if policy is None:
        return None
    if (latest := _block(policy, "latest")) is not None:
        count = re.search(r"\bnum_versions\s*:\s*(\d+)", latest)
        if count is None or int(count.group(1)) < 1:
            raise PolicyError("version_policy latest needs num_versions >= 1")
        return VersionPolicy("latest", int(count.group(1)))
    if (specific := _block(policy, "specific")) is not None:
        versions = [int(v) for v in re.findall(r"\d+", " ".join(re.findall(r"\bversions\s*:\s*(\[[^\]]*\]|\d+)",
                                                                              specific)))]
        if not versions:
            raise PolicyError("version_policy specific lists no versions")
        return VersionPolicy("specific", versions=tuple(sorted(set(versions))))
    if _block(policy, "all") is not None:
        return VersionPolicy("all")
    raise PolicyError("version_policy is none of latest, specific, all")


@dataclass(frozen=True)
class TensorSpec:
    """One graph tensor as Triton sees it: dims without the batch dim, -1 where the graph is dynamic."""

    name: str
    datatype: str  # OIP / Triton name without TYPE_, e.g. FP32
    dims: tuple[int, ...]

    @property
    def is_scalar_per_row(self) -> bool:
        return not self.dims


def _spec(name: str, ort_type: str, shape: list[int | str | None], path: Path) -> TensorSpec:
    datatype = c.DATATYPES[name]
    if ort_type != ORT_TYPES[datatype]:
        raise c.ContractError(f"{path}: tensor '{name}' is {ort_type}, the contract says {datatype}")
    if not shape or isinstance(shape[0], int):
        raise c.ContractError(f"{path}: tensor '{name}' needs a dynamic batch dim first, got {shape}")
    return TensorSpec(name, datatype, tuple(d if isinstance(d, int) else -1 for d in shape[1:]))


def read_graph(path: Path) -> tuple[c.ModelInfo, list[TensorSpec], list[TensorSpec]]:
    """The model's metadata (strict) and its inputs and outputs in contract order."""
    session = make_session(path, intra_op_threads=1)
    check_io(session, path.stem)
    info = c.ModelInfo.from_metadata(path.stem, session.get_modelmeta().custom_metadata_map)
    inputs = {t.name: _spec(t.name, t.type, t.shape, path) for t in session.get_inputs()}
    outputs = {t.name: _spec(t.name, t.type, t.shape, path) for t in session.get_outputs()}
    return info, [inputs[n] for n in c.INPUTS], [outputs[n] for n in c.OUTPUTS]


def _tensor_block(spec: TensorSpec, label_file: str | None = None) -> str:
    lines = [f'    name: "{spec.name}"', f"    data_type: TYPE_{spec.datatype}"]
    if spec.is_scalar_per_row:
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    else:
        lines.append(f"    dims: [ {', '.join(map(str, spec.dims))} ]")
    if label_file:
        lines.append(f'    label_filename: "{label_file}"')
    return "  {\n" + "\n".join(lines) + "\n  }"


def model_config(info: c.ModelInfo, inputs: list[TensorSpec], outputs: list[TensorSpec], *,
                 max_batch_size: int, queue_delay_us: int, version_policy: VersionPolicy = LATEST) -> str:
    """config.pbtxt text for Triton's onnxruntime backend (the version policy is read by diffres serve too)."""
    ins = ",\n".join(_tensor_block(s) for s in inputs)
    outs = ",\n".join(_tensor_block(s, LABEL_FILE if s.name == c.LOGITS else None) for s in outputs)
    return (f"# Generated by `python -m diffres.triton` from {info.name}.onnx (contract {c.CONTRACT_VERSION}, "
            f"version {info.version}).\n"
            f"# Audio: mono float32 at {info.sample_rate} Hz; lengths = valid samples per row.\n"
            f'name: "{info.name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
            f"{version_policy.pbtxt}\n"
            f"input [\n{ins}\n]\noutput [\n{outs}\n]\n"
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
            f'parameters {{ key: "sample_rate" value: {{ string_value: "{info.sample_rate}" }} }}\n'
            f'parameters {{ key: "contract" value: {{ string_value: "{c.CONTRACT_VERSION}" }} }}\n')


def existing_policy(config: Path) -> VersionPolicy:
    """The version policy an existing config.pbtxt sets (kept when a version is added), else Triton's default."""
    return (policy_from_config(config.read_text()) if config.is_file() else None) or LATEST


def _replace_file(target: Path, write: Callable[[Path], object]) -> None:
    """`write` a temporary file beside `target`, then rename it over `target`: readers see old or new, whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add_version(source: Path, folder: Path, version: int) -> None:
    """NAME/N/model.onnx: a new version folder appears whole (built as .N-*, then renamed); an existing one
    gets its file replaced whole."""
    target = folder / str(version)
    if target.is_dir():
        _replace_file(target / "model.onnx", lambda tmp: shutil.copyfile(source, tmp))
        return
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{version}-"))
    try:
        shutil.copyfile(source, staging / "model.onnx")
        os.chmod(staging, 0o755)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_model(path: Path, repo: Path, *, max_batch_size: int = 16, queue_delay_us: int = 5000,
                version: int | None = None) -> Path:
    """Write one model's folder (config, labels, version 1) into `repo`, replacing it; with `version`, add (or
    replace) that version beside the folder's others, keeping its config.pbtxt's version_policy. Returns the
    folder."""
    info, inputs, outputs = read_graph(path)
    folder = repo / info.name
    if version is None and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model_config(info, inputs, outputs, max_batch_size=max_batch_size, queue_delay_us=queue_delay_us,
                          version_policy=existing_policy(folder / CONFIG_FILE))
    _replace_file(folder / CONFIG_FILE, lambda tmp: tmp.write_text(config))
    _replace_file(folder / LABEL_FILE, lambda tmp: tmp.write_text("".join(f"{label}\n" for label in info.labels)))
    _add_version(path, folder, 1 if version is None else version)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffres.triton", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=MODELS_DIR,
                   help="folder of exported *.onnx (default: the shipped ones)")
    p.add_argument("--out", type=Path, default=Path("model_repository"), help="repository to write")
    p.add_argument("--max-batch-size", type=int, default=16, help="Triton max_batch_size (as DIFFRES_BATCH_SIZE)")
    p.add_argument("--queue-delay-us", type=int, default=5000,
                   help="dynamic batching delay in microseconds (as DIFFRES_BATCH_WAIT_MS)")
    p.add_argument("--version", type=int, default=None,
                   help="add the models as version N beside the repository's other versions (default: replace "
                        "each model's folder with version 1)")
    args = p.parse_args(argv)
    paths = sorted(args.models.glob("*.onnx"))
    if not paths:
        print(f"no *.onnx in {args.models}", file=sys.stderr)
        return 2
    if args.max_batch_size < 1 or args.queue_delay_us < 0 or (args.version is not None and args.version < 0):
        p.error("--max-batch-size must be >= 1, --queue-delay-us and --version >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        folder = write_model(path, args.out, max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us,
                             version=args.version)
        print(f"{folder}: {CONFIG_FILE}, {LABEL_FILE}, {1 if args.version is None else args.version}/model.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
