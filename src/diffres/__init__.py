"""DiffRes audio classification: a Python API, a client, a CLI and a service, all giving the same answer.

    import diffres
    clf = diffres.Classifier.load("keywords")     # a shipped model, or the path to any exported .onnx
    result = clf.classify("talk.m4a")             # what POST /v1/classify answers, as a typed object
    client = diffres.Client("http://127.0.0.1:8000")

The package reads top-down as the audio flows: decode -> windows -> runner -> session -> pipeline
(the answer), with contract, errors and schemas beneath everything; api, client, cli and server
sit on top. Training and export (diffres.train) need the `train` extra.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("diffres")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from diffres.api import Classifier, available_models
    from diffres.client import AsyncClient, Client
    from diffres.errors import DiffresError
    from diffres.schemas import ClassifyResult, Event, Prediction

# Public names, and the module each lives in (imported on first use: `import diffres` stays light).
_PUBLIC = {
    "Classifier": "diffres.api",
    "available_models": "diffres.api",
    "Client": "diffres.client",
    "AsyncClient": "diffres.client",
    "ClassifyResult": "diffres.schemas",
    "Event": "diffres.schemas",
    "Prediction": "diffres.schemas",
    "DiffresError": "diffres.errors",
}
__all__ = ["AsyncClient", "Classifier", "ClassifyResult", "Client", "DiffresError", "Event", "Prediction",
           "available_models"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'diffres' has no attribute {name!r}")
