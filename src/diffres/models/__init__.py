"""The models shipped in the package (package data), trained and exported by this repository's code.

`keywords` (6 wake words + `_background_`, 16 kHz) and `digits` (spoken digits, 8 kHz); each
NAME.export.json beside its NAME.onnx (in the repository, not the wheel) records its export.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent


def available_models() -> list[str]:
    """Names of the shipped models (`Classifier.load(name)` takes them)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.onnx"))
