"""The package as it is built and laid out: one import name, layers that only import downwards, one pipeline."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SRC = REPO_ROOT / "src" / "diffres"
# Bottom to top; a module may import its own layer and the ones below, never one above.
LAYERS = [
    {"contract", "errors", "cpu", "clock", "schemas", "models"},
    {"decode", "ffmpeg", "session"},
    {"windows", "runner", "merge", "events"},
    {"pipeline"},
    {"api", "client", "triton", "train"},
    {"server"},
    {"cli", "__main__", "__init__"},
]


def layer_of(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if module in names)


def diffres_imports(path: Path) -> set[str]:
    """The first component under `diffres.` of every module this file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found |= {n.split(".")[1] for n in names if n.startswith("diffres.")}
    return found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_nothing_imports_what_sits_above_it(path: Path) -> None:
    module = path.relative_to(SRC).parts[0].removesuffix(".py")
    above = {m for m in diffres_imports(path) if layer_of(m) > layer_of(module)}
    assert not above, f"{path.relative_to(SRC)} (layer {layer_of(module)}) imports {above} from above it"


def test_window_event_and_softmax_logic_live_in_the_pipeline_only() -> None:
    """No second copy anywhere in the package or the repository's tools."""
    homes = {"def softmax(": {"pipeline.py"}, "EventTracker(": {"pipeline.py"}, "WindowCutter(": {"windows.py",
             "pipeline.py"}, "ClipReader(": {"pipeline.py"}, "def top_predictions(": {"pipeline.py"}}
    files = [*SRC.rglob("*.py"), *(REPO_ROOT / "tools").rglob("*.py")]
    for needle, allowed in homes.items():
        where = {f.name for f in files if needle in f.read_text()}
        assert where <= allowed, f"{needle} appears in {sorted(where - allowed)}"


def test_the_wheel_holds_one_import_and_the_shipped_models(tmp_path: Path) -> None:
    """Built as `python -m build` builds it (without isolation here: the same setuptools, no download)."""
    run = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path),
                          str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"diffres"}
    shipped = {Path(n).name for n in names if n.startswith("diffres/models/")}
    assert {"keywords.onnx", "digits.onnx", "__init__.py"} <= shipped
    assert not [n for n in shipped if n.endswith(".export.json")]  # reports stay in the repository
    assert {"diffres/server/static/index.html", "diffres/py.typed", "diffres/train/trainer.py"} <= set(names)
    data = {f"diffres/{p.relative_to(SRC).as_posix()}" for p in SRC.rglob("*") if p.is_file()
            and p.suffix not in {".py", ".pyc"} and not p.name.endswith(".export.json")}
    assert not data - set(names), f"package files left out of the wheel (pyproject package-data): {data - set(names)}"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "diffres = diffres.cli:main" in entry_points
