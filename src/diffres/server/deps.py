"""What route handlers depend on, as FastAPI dependencies: the settings, the model registry, the metrics,
and the one rule every route shares: a query parameter it does not take is a 422 that names it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel

from diffres.errors import InvalidParameters
from diffres.server.config import Settings
from diffres.server.metrics import Metrics
from diffres.server.registry import ModelRegistry


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a
# thread hop (two GIL hand-overs and a wake-up) per dependency per request, for a dictionary lookup.


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes, its query models' fields included."""
    names: set[str] = set()
    for param in dependant.query_params:
        kind = param.field_info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= {f.alias or n for n, f in kind.model_fields.items()}
        else:
            names.add(param.alias)
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


_allowed: dict[int, tuple[Dependant, set[str]]] = {}  # id(dependant) -> (it, its query names): computed once


def allowed_query_names(dependant: Dependant, route: object = None) -> set[str]:
    """The route's query parameters: its dependant's, and those its OpenAPI declares itself (`openapi_extra`
    parameters in the query: routes that read theirs from the request, as the classify routes do)."""
    cached = _allowed.get(id(dependant))
    if cached is None or cached[0] is not dependant:
        extra = (getattr(route, "openapi_extra", None) or {}).get("parameters", [])
        names = _query_names(dependant) | {p["name"] for p in extra if p.get("in") == "query"}
        cached = _allowed[id(dependant)] = (dependant, names)
    return cached[1]


async def known_query_parameters(request: HTTPConnection) -> None:
    """422 for a query parameter the route does not take (a typo such as `?topk=1` must not pass silently).
    The WebSocket stream checks its own (its parameters model forbids others)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.scope.get("query_string") or request.scope["type"] != "http":
        return
    allowed = allowed_query_names(dependant, route)
    unknown = sorted(k for k in request.query_params if k not in allowed)
    if unknown:
        takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
        raise InvalidParameters(f"unknown query parameter {unknown[0]!r} for {request.url.path}: {takes}")
