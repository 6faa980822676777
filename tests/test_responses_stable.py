"""The service's JSON answers stay byte-for-byte what they were before the work-per-request changes.

Golden bodies of /v1/classify and /v1/classify/batch for the committed example recordings (examples/),
written by the code as it was before those changes, with only `timing_ms` masked (it is a clock reading):
keys, their order, float formatting (pydantic's), separators and whitespace must all be identical.

The bodies depend on the shipped model's weights, so they are tied to its build identity: when
`keywords.onnx` is replaced (a new training run) the golden test skips with the reason, and the goldens are
rewritten from a checkout whose serving code is known good:

    .venv/bin/python -m tests.test_responses_stable --write

The second test needs no goldens: whatever the model, the service's serialisation of an answer is
byte-for-byte what FastAPI's own response path (validate against the response model, then pydantic's
`serialize_json` with exclude_none) gives for the same object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, Served, require_model, serve

GOLDEN = Path(__file__).resolve().parent / "golden" / "responses_keywords.json"
TIMING = re.compile(rb'"timing_ms":\{"decode":[-0-9.eE+]+,"inference":[-0-9.eE+]+,"total":[-0-9.eE+]+\}')
MASK = b'"timing_ms":"*"'

FILES = {"alexa": "alexa.flac", "computer": "computer.flac", "long": "long.flac", "three": "three.wav"}
TYPES = {".flac": "audio/flac", ".wav": "audio/wav"}

# name -> (route, query, files by name, multipart?)
CASES: dict[str, tuple[str, str, list[str], bool]] = {
    "alexa_multipart": ("/v1/classify", "", ["alexa"], True),
    "alexa_raw": ("/v1/classify", "", ["alexa"], False),
    "computer_importance_top3": ("/v1/classify", "include_importance=true&top_k=3", ["computer"], False),
    "computer_thresholds": ("/v1/classify", "thresholds=computer:0.2,alexa:0.9&min_score=0.4", ["computer"], True),
    "alexa_spectrogram": ("/v1/classify", "include_spectrogram=true&include_importance=true", ["alexa"], True),
    "long_windowed": ("/v1/classify", "", ["long"], False),
    "long_importance_no_segments": ("/v1/classify", "include_importance=true&include_segments=false&top_k=2",
                                    ["long"], True),
    "long_spectrogram_warning": ("/v1/classify", "include_spectrogram=true&top_k=1", ["long"], True),
    "three_8k": ("/v1/classify", "top_k=10", ["three"], False),
    "batch_all": ("/v1/classify/batch", "top_k=2", ["alexa", "computer", "long", "three"], True),
    "batch_importance": ("/v1/classify/batch", "include_importance=true&min_score=0.2", ["computer", "alexa"], True),
}


def masked(body: bytes) -> bytes:
    """The body with every timing_ms object replaced by a fixed token: all other bytes are compared."""
    return TIMING.sub(MASK, body)


async def answer(client: Any, case: str) -> tuple[int, bytes]:
    route, query, names, multipart = CASES[case]
    url = f"{route}?{query}" if query else route
    paths = [EXAMPLES / FILES[n] for n in names]
    if multipart:
        files = [("file", (p.name, p.read_bytes(), TYPES[p.suffix])) for p in paths]
        r = await client.post(url, files=files)
    else:
        [path] = paths
        r = await client.post(url, content=path.read_bytes(), headers={"content-type": TYPES[path.suffix]})
    return r.status_code, masked(r.content)


def model_version() -> str:
    from diffres.models import MODELS_DIR
    from diffres.runner import OnnxModel

    return OnnxModel.load(MODELS_DIR / "keywords.onnx", intra_op_threads=1).info.version


pytestmark = pytest.mark.anyio


async def test_bodies_match_the_goldens(served: Served) -> None:
    require_model("keywords")
    golden = json.loads(GOLDEN.read_text())
    version = model_version()
    if golden["model_version"] != version:
        pytest.skip(f"goldens are for keywords {golden['model_version']}, the shipped model is {version}: rewrite "
                    "them (python -m tests.test_responses_stable --write) from known-good serving code")
    for case, want in golden["cases"].items():
        status, body = await answer(served.client, case)
        assert status == want["status"], case
        assert body == want["body"].encode(), f"{case}: the body changed"
    assert set(golden["cases"]) == set(CASES)


async def test_serialisation_is_fastapis(served: Served) -> None:
    """Independent of the model: the route's bytes equal FastAPI's validate + serialize_json of the same answer."""
    from pydantic import TypeAdapter

    from diffres.pipeline import ClassifyOptions
    from diffres.schemas import BatchItem, BatchResult, ClassifyResult, Timing
    from diffres.server.responses import json_body

    registry = served.app.state.registry
    model = registry.get(None)
    for path, options in [(EXAMPLES / "alexa.flac", ClassifyOptions(include_spectrogram=True, include_importance=True)),
                          (EXAMPLES / "long.flac", ClassifyOptions(include_importance=True, top_k=3))]:
        with path.open("rb") as f:
            result = await model.classify(f, options, 0.0)
        batch = BatchResult(model="m", results=[BatchItem(index=0, filename="x", status=200, result=result),
                                                BatchItem(index=1, filename=None, status=422)],
                            timing_ms=Timing(decode=1.5, inference=2e-05, total=3.0))
        for value, kind in [(result, ClassifyResult), (batch, BatchResult)]:
            adapter = TypeAdapter(kind)
            want = adapter.dump_json(adapter.validate_python(value), exclude_none=True)
            assert json_body(value) == want


def write_goldens() -> None:
    """Rewrite the goldens with the serving code of this checkout (run it on known-good code only)."""

    async def collect() -> dict[str, Any]:
        async with serve(max_upload_bytes=4 * 1024 * 1024, max_duration_s=600.0) as s:
            cases = {}
            for case in CASES:
                status, body = await answer(s.client, case)
                cases[case] = {"status": status, "body": body.decode()}
            return cases

    cases = asyncio.run(collect())
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps({"model_version": model_version(), "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} golden bodies to {GOLDEN}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the goldens from this checkout's code")
    if parser.parse_args().write:
        write_goldens()
