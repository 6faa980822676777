"""The `train` extra: training and export modules import torch and onnx from here, so that in a serving
install (no torch) they fail with an error that says what to install, not a bare ModuleNotFoundError."""

from __future__ import annotations

INSTALL = "pip install torch==2.13.0 && pip install 'diffres[train]' (torch first and pinned: a CPU wheel)"

try:
    import onnx
    import torch
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(f"diffres.train needs the `train` extra ({exc.name} is not installed): {INSTALL}",
                              name=exc.name) from None

__all__ = ["onnx", "torch"]
