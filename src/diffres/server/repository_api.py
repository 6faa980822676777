"""The Open Inference Protocol's model repository extension over HTTP, answered as Triton answers it
(tritonclient.http's get_model_repository_index, load_model and unload_model work as they are):

    POST /v2/repository/index                 [{"name", "version", "state", "reason"}, ...]; body
                                              {"ready": true}: READY versions only
    POST /v2/repository/models/{model}/load   200 (empty body) once its versions are checked and serving;
                                              400 when one is refused (what served before keeps serving)
    POST /v2/repository/models/{model}/unload 200 (empty body) once its versions are out of service

Load and unload are admin operations (server/access.py's AdminAccess: 401/403). All three are the
registry's index, load and unload, the very calls gRPC's repository RPCs make (server/grpc_service.py).
Errors in the protocol's shape, `{"error": "<message>", "code"}`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel

from diffres.errors import BadRequest, PayloadTooLarge
from diffres.server.access import presented_key
from diffres.server.loaded import check_parameters
from diffres.server.registry import ModelRegistry
from diffres.server.uploads import limited_stream

router = APIRouter(prefix="/v2/repository", tags=["Model repository (OIP extension)"])
MAX_BODY = 64 * 1024  # parameters only: Triton's file overrides (base64 models) are refused anyway


class RepositoryError(BaseModel):
    error: str
    code: str


class IndexEntry(BaseModel):
    name: str
    version: str | None = None
    state: str
    reason: str = ""


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": RepositoryError, "description": text} for code, text in (
        (400, "A version was refused (the reason; whatever served before keeps serving), or a bad body"),
        (401, "An admin key is needed (DIFFRES_ADMIN_KEYS)"),
        (403, "Not an admin key, or repository control is off (no DIFFRES_ADMIN_KEYS, no DIFFRES_ADMIN_LOOPBACK)"),
        (404, "No such model in the repository"))}
ModelName = Annotated[str, Path(description="Model name (its folder in the repository)", examples=["keywords"])]


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def require_admin(request: Request) -> None:
    """Load and unload are for admins: 401 without a key, 403 with another one or when control is off."""
    request.app.state.admin.authorize(presented_key(request.scope))


async def _json_body(request: Request) -> dict[str, Any]:
    """The optional JSON object body (tritonclient sends none for the index), bounded."""
    try:
        raw = b"".join([chunk async for chunk in limited_stream(request, MAX_BODY)])
    except PayloadTooLarge as exc:
        raise PayloadTooLarge(f"request body exceeds {MAX_BODY} bytes: the repository API takes parameters "
                              "only") from exc
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"invalid JSON body: {exc}"[:300]) from exc
    if not isinstance(body, dict) or not isinstance(body.get("parameters", {}), dict):
        raise BadRequest('the body must be a JSON object, its "parameters" an object')
    return body


@router.post("/index", response_model=list[IndexEntry], response_model_exclude_none=True, responses=ERRORS)
async def repository_index(request: Request) -> list[dict[str, str]]:
    """Every model of the repository, one entry per version (READY, LOADING, UNLOADING, UNAVAILABLE and why);
    body `{"ready": true}` for the READY ones only."""
    body = await _json_body(request)
    registry = _registry(request)
    await registry.rescan()
    return registry.index(ready_only=bool(body.get("ready", False)))


@router.post("/models/{model_name}/load", dependencies=[Depends(require_admin)], responses=ERRORS)
async def load_model(request: Request, model_name: ModelName) -> Response:
    """Load or reload a model to its version policy (admins): new and changed versions load beside the ones
    serving, are checked, then take traffic; answered once that is done."""
    check_parameters((await _json_body(request)).get("parameters", {}))
    await _registry(request).load(model_name)
    return Response(status_code=200)


@router.post("/models/{model_name}/unload", dependencies=[Depends(require_admin)], responses=ERRORS)
async def unload_model(request: Request, model_name: ModelName) -> Response:
    """Unload every version of a model (admins); requests and streams on it finish first. It stays unloaded,
    polling included, until loaded again."""
    await _json_body(request)  # Triton's unload_dependents means nothing here (no ensembles)
    await _registry(request).unload(model_name)
    return Response(status_code=200)
