"""Answers serialised once: pydantic's JSON of the model the route built, without FastAPI validating it again.

A route that returns a model has FastAPI check it against the response model (a second validation of
what the pipeline just built) and then serialise it. `json_response` serialises the model directly with
the same serializer and the same options FastAPI uses for these routes (`response_model_exclude_none`),
so the bytes are identical (tests/test_responses_stable.py holds both to that); the route keeps its
`response_model` for the OpenAPI document.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response


def json_body(model: BaseModel) -> bytes:
    """The model as the REST API writes it: pydantic's JSON, fields that are None left out."""
    return model.__pydantic_serializer__.to_json(model, exclude_none=True)


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    return Response(json_body(model), status_code=status_code, media_type="application/json")
