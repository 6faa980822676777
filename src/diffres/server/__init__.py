"""The service: FastAPI + onnxruntime (never torch), REST /v1, OIP /v2, the live stream, the demo page.

`create_app(settings)` builds it, `serve()` runs it (`diffres serve`). Requests reach the pipeline
(diffres.pipeline) with the model's micro-batcher as its runner (batching.py).
"""
