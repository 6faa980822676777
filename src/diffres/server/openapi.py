"""What the OpenAPI document says about the routes beyond their types: bodies, examples, error codes.

The example answer is a real one (`openapi_example.json`: POST /v1/classify?top_k=2 with
examples/alexa.flac, written by `python -m tools.readme_examples`; a test keeps it current).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffres.schemas import ErrorResponse

EXAMPLE = json.loads((Path(__file__).parent / "openapi_example.json").read_text())

AUDIO_BODY: dict[str, Any] = {
    # Request examples (ReDoc shows them beside the operation): the answer to the first is EXAMPLE.
    "x-codeSamples": [
        {"lang": "Shell", "label": "curl", "source": "curl -s -F file=@examples/alexa.flac \\\n"
                                                      "  'http://127.0.0.1:8000/v1/classify?top_k=2'"},
        {"lang": "Shell", "label": "curl (raw body)",
         "source": "curl -s --data-binary @examples/long.flac -H 'Content-Type: audio/flac' \\\n"
                   "  'http://127.0.0.1:8000/v1/classify?include_segments=false&min_score=0.8'"},
        {"lang": "Python", "label": "diffres.Client",
         "source": "import diffres\n\nwith diffres.Client('http://127.0.0.1:8000') as client:\n"
                   "    result = client.classify('examples/alexa.flac', top_k=2)\nprint(result.events)"},
    ],
    "requestBody": {
        "required": True,
        "description": "The recording, in any format the decoder reads (WAV, FLAC, MP3, OGG/Opus, M4A/AAC, WebM, "
                       "AMR, ...), as the multipart field `file` (`curl -F file=@clip.wav URL`) or as the raw body "
                       "(`curl --data-binary @clip.wav -H 'Content-Type: audio/wav' URL`).",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
                "encoding": {"file": {"contentType": "audio/*"}}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Several recordings as repeated multipart fields `file` (up to DIFFRES_MAX_BATCH_FILES).",
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}}}}},
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        400: "The audio cannot be used: `invalid_audio` (not a format we read, or damaged), `truncated_audio`, "
             "`empty_audio`, `non_finite_audio`, `out_of_range_audio`, `unsupported_sample_rate`, "
             "`audio_too_short` (under one analysis window), or `invalid_multipart`",
        401: "`unauthorized`: API keys are configured and the request has none, or an unknown one",
        404: "`model_not_found`: no loaded model of that name",
        408: "`body_timeout`: the request body stalled for DIFFRES_BODY_TIMEOUT_S",
        413: "`payload_too_large` (the body over DIFFRES_MAX_UPLOAD_BYTES) or `audio_too_long` (over "
             "DIFFRES_MAX_DURATION_S, found while decoding)",
        415: "`unsupported_media_type`: not multipart/form-data, audio/* or application/octet-stream",
        422: "`invalid_parameters`: a parameter out of range, thresholds naming unknown labels, or an unknown "
             "parameter (named in the message)",
        503: "`not_ready` (loading or shutting down) or `overloaded` (at capacity, nothing was done): retry after "
             "the Retry-After header's seconds"}.items()
}
CLASSIFY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The answer: clip-level labels, whether anything was detected, events in time and, for "
                         "windowed audio, the windows",
          "content": {"application/json": {"example": EXAMPLE}}},
    **ERRORS,
}


def parameters_in_place(schema: dict[str, Any]) -> dict[str, Any]:
    """Operations that declare their query parameters in `openapi_extra` (the classify routes read theirs from the
    request) get them where FastAPI puts declared ones, before `responses`: the document stays as it was."""
    for operations in schema.get("paths", {}).values():
        for name, operation in list(operations.items()):
            keys = list(operation)
            if "parameters" in keys and "responses" in keys and keys.index("parameters") > keys.index("responses"):
                keys.remove("parameters")
                keys.insert(keys.index("responses"), "parameters")
                operations[name] = {key: operation[key] for key in keys}
    return schema
