"""`python -m tools.loadtest.floor`: the service's HTTP front end alone, up to a chosen stage, as a server.

What a request costs before any model work, measured the way the load test measures the service:
`python -m tools.loadtest.ab` runs it as a variant (`LOADTEST_SERVER=tools.loadtest.floor`) under the
same locust load and reads its CPU per request from /proc. `FLOOR_STAGE` says how far a request goes:

- `http`: uvicorn with the service's options and connection guard, a Starlette route that reads the
  whole body and sends a fixed answer of the service's shape (top 5 labels);
- `multipart`: the body received as the service receives it (`diffres.server.uploads.receive_body`);
- `decode`: then opened, checked and decoded to the model's rate in a worker thread, as the service
  does for a clip that runs whole (`Pipeline.open`, `Pipeline.start(...).rows()`);
- `decode-inline`: the same decoding on the event loop, without the worker-thread hop.

No FastAPI, middleware, access log, metrics, batcher, onnxruntime or answer building: each stage's CPU
per request is a floor the full service cannot go below with this front end.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import BinaryIO

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from diffres.pipeline import ClassifyOptions, Pipeline
from diffres.runner import OnnxModel
from diffres.server.app import uvicorn_options
from diffres.server.config import Settings, get_settings
from diffres.server.http_guard import guarded_protocol
from diffres.server.uploads import receive_body
from diffres.windows import WindowPlan

STAGES = ("http", "multipart", "decode", "decode-inline")
ANSWER = json.dumps({"model": "floor", "sample_rate": 16000,  # no duration_s: locust counts the clip's
                       "predictions": [{"label": f"label{i}", "score": 0.1} for i in range(5)],
                       "frames": {"input": 301, "output": 151}, "events": [],
                       "timing_ms": {"decode": 0.0, "inference": 0.0, "total": 0.0}}).encode()


def app(stage: str, settings: Settings | None = None) -> Starlette:
    """The floor app for one stage (the module docstring says what each does)."""
    if stage not in STAGES:
        raise SystemExit(f"FLOOR_STAGE must be one of {STAGES}, got {stage!r}")
    settings = settings or get_settings()
    model = OnnxModel.load(settings.model_dir / f"{settings.default_model}.onnx", intra_op_threads=1)
    pipeline = Pipeline(model.info, WindowPlan.for_model(model.info))

    def decode(file: BinaryIO) -> None:
        """Open, check and decode a clip as the service does for one that runs whole, then close it."""
        opened = pipeline.open(file)
        try:
            pipeline.start(opened, ClassifyOptions(), slots=1).rows()
        finally:
            opened.close()

    async def classify(request: Request) -> Response:
        if stage == "http":
            await request.body()
            return Response(ANSWER, media_type="application/json")
        async with receive_body(request, settings.max_upload_bytes) as body:
            upload = body.single("file")
            if stage == "decode":
                await asyncio.to_thread(decode, upload.file)
            elif stage == "decode-inline":
                decode(upload.file)
        return Response(ANSWER, media_type="application/json")

    async def ready(_: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    async def metrics(_: Request) -> Response:
        return Response(b"", media_type="text/plain")

    return Starlette(routes=[Route("/v1/classify", classify, methods=["POST"]), Route("/readyz", ready),
                             Route("/metrics", metrics)])


def main() -> None:
    settings = get_settings()
    uvicorn.run(app(os.environ.get("FLOOR_STAGE", "http")), http=guarded_protocol(settings),
                **uvicorn_options(settings))


if __name__ == "__main__":
    main()
