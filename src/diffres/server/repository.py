"""The model repository on disk: Triton's layout read as versions, and which versions each model serves.

Layout (what `make triton-repo` writes, so its output serves as it is; docs/repository.md):

    MODEL_DIR/NAME/N/model.onnx    version N (a non-negative integer) of model NAME
    MODEL_DIR/NAME/config.pbtxt    optional: only its `version_policy` is read (Triton's syntax)
    MODEL_DIR/NAME/labels.txt      optional, ignored (the labels are in the model's own metadata)
    MODEL_DIR/NAME.onnx            the flat layout: version 1 of NAME (a folder NAME/ wins over it)

Version policy (Triton's; diffres/triton.py reads and writes config.pbtxt's): `latest:N` serves the
N highest versions on disk (default `latest:1`), `specific` the listed ones, `all` every one.
DIFFRES_VERSION_POLICY names a model's policy (it wins over config.pbtxt, so an operator can pin
without editing the repository) or gives the default for the rest (`*`). Scanning only reads names and file stamps: no model is opened here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from diffres.triton import LATEST, PolicyError, VersionPolicy, policy_from_config

__all__ = ["LATEST", "PolicyError", "RepoModel", "VersionFile", "VersionPolicy", "parse_policies", "parse_policy",
           "policy_from_config", "scan"]

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
DEFAULT_KEY = "*"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
Stamp = tuple[int, int, int]  # mtime_ns, size, inode: a file replaced or rewritten changes it


def parse_policy(text: str) -> VersionPolicy:
    """`latest`, `latest:N`, `all`, or versions `1,3` (specific)."""
    text = text.strip().lower()
    kind, _, arg = text.partition(":")
    if kind == "latest":
        if arg and not (arg.isdigit() and int(arg) >= 1):
            raise PolicyError(f"'{text}': latest:N needs a whole number N >= 1")
        return VersionPolicy("latest", int(arg) if arg else 1)
    if text == "all":
        return VersionPolicy("all")
    versions = [v.strip() for v in text.split(",")]
    if not text or not all(v.isdigit() for v in versions):
        raise PolicyError(f"'{text}': expected latest, latest:N, all, or versions such as 1,3")
    return VersionPolicy("specific", versions=tuple(sorted({int(v) for v in versions})))


def parse_policies(text: str) -> dict[str, VersionPolicy]:
    """DIFFRES_VERSION_POLICY: `MODEL=POLICY` entries separated by `;` or spaces (`*` = every other model),
    e.g. `keywords=latest:2; digits=3; *=all`."""
    policies: dict[str, VersionPolicy] = {}
    for entry in re.split(r"[;\s]+", text.strip()):
        if not entry:
            continue
        name, eq, policy = entry.partition("=")
        if not eq or not name or not (name == DEFAULT_KEY or _NAME.match(name)):
            raise PolicyError(f"'{entry}': expected MODEL=POLICY (or *=POLICY), e.g. keywords=latest:2")
        policies[name] = parse_policy(policy)
    return policies


@dataclass(frozen=True)
class VersionFile:
    """One version's model file as found on disk."""

    version: int
    path: Path
    stamp: Stamp


@dataclass(frozen=True)
class RepoModel:
    """A model as the repository holds it: its versions on disk and the policy that picks among them."""

    name: str
    versions: dict[int, VersionFile] = field(default_factory=dict)
    policy: VersionPolicy = LATEST
    problem: str = ""  # why nothing of it can be served as it stands (an unreadable config.pbtxt)

    @property
    def wanted(self) -> set[int]:
        return set() if self.problem else self.policy.select(self.versions)


def stamp_of(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _versions(folder: Path) -> dict[int, VersionFile]:
    """NAME/N/model.onnx for every integer N (a version folder without model.onnx yet is not a version)."""
    found = {}
    for sub in folder.iterdir():
        path = sub / MODEL_FILE
        if sub.name.isdigit() and (stamp := stamp_of(path)) is not None:
            found[int(sub.name)] = VersionFile(int(sub.name), path, stamp)
    return found


def _policy(name: str, folder: Path | None, policies: dict[str, VersionPolicy]) -> tuple[VersionPolicy, str]:
    """The setting's entry for the model, else config.pbtxt's, else the setting's `*`, else latest:1."""
    if name in policies:
        return policies[name], ""
    config = folder / CONFIG_FILE if folder is not None else None
    if config is not None and config.is_file():
        try:
            found = policy_from_config(config.read_text(errors="replace"))
        except (PolicyError, OSError) as exc:
            return LATEST, f"{CONFIG_FILE}: {exc}"
        if found is not None:
            return found, ""
    return policies.get(DEFAULT_KEY, LATEST), ""


def scan(folder: Path, policies: dict[str, VersionPolicy]) -> dict[str, RepoModel]:
    """Every model of the repository, by name (folders NAME/, and flat NAME.onnx as version 1)."""
    if not folder.is_dir():
        return {}
    models: dict[str, RepoModel] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and _NAME.match(entry.name):
            policy, problem = _policy(entry.name, entry, policies)
            models[entry.name] = RepoModel(entry.name, _versions(entry), policy, problem)
    for entry in sorted(folder.glob("*.onnx")):
        if entry.stem in models or not _NAME.match(entry.stem) or (stamp := stamp_of(entry)) is None:
            continue  # a folder of the same name is the model; the flat file is left alone
        policy, problem = _policy(entry.stem, None, policies)
        models[entry.stem] = RepoModel(entry.stem, {1: VersionFile(1, entry, stamp)}, policy, problem)
    return models
