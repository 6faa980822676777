"""The service's own API (/v1), probes and /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffres.errors import DiffresError, EmptyAudio, InvalidParameters
from diffres.events import parse_thresholds
from diffres.pipeline import ClassifyOptions
from diffres.schemas import (
    BatchItem,
    BatchResult,
    ClassifyResult,
    ErrorDetail,
    ErrorResponse,
    Health,
    ModelDescription,
    ModelList,
    Readiness,
    Timing,
)
from diffres.server.deps import MetricsDep, RegistryDep, SettingsDep
from diffres.server.errors import error_response, public
from diffres.server.openapi import AUDIO_BODY, BATCH_BODY, CLASSIFY_RESPONSES, ERRORS
from diffres.server.loaded import LoadedModel
from diffres.server.registry import ModelRegistry
from diffres.server.responses import json_response
from diffres.server.uploads import Body, Upload, receive_body

log = logging.getLogger(__name__)
router = APIRouter()


class ClassifyParams(BaseModel):
    """Query parameters of the classify routes (multipart form fields of the same names also work); any other
    parameter is refused (422), so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, max_length=100, description="Model name (file stem); default: the default model")
    version: int | None = Field(None, ge=0, description="Repository version of the model; default: its highest "
                                                        "ready version (the answer's `repository_version` says which)")
    top_k: int = Field(5, ge=1, le=1000, description="Labels to return, best first, in `predictions` and in each "
                                                     "segment (all of them if above the label count)")
    include_importance: bool = Field(False, description="Add the per-frame DiffRes importance curve over the whole "
                                                        "audio (`importance`, `importance_hop_s`)")
    include_spectrogram: bool = Field(
        False, description="Add the log-mel, importance and merged frames the classifier saw (`spectrogram`); "
                           "for audio that is not windowed (up to the model's long_audio_s)")
    include_segments: bool = Field(True, description="Per-window results of windowed audio (`segments`); false "
                                                     "leaves them out (a 10-minute file has ~400)")
    min_score: float | None = Field(
        None, ge=0, le=1, description="Event threshold: a window fires for its best non-background label when that "
                                      "label's probability reaches it; default: the model's min_score (GET /v1/models)")
    thresholds: str = Field(
        "", max_length=4000, description="Per-label event thresholds overriding min_score, `label:score,label:score`")


def declared_query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The OpenAPI parameters FastAPI writes for `Annotated[model, Query()]`, made once by FastAPI itself."""
    async def _probe(params: Any) -> None:
        """Never called: its OpenAPI parameters are what the classify routes declare."""

    _probe.__annotations__ = {"params": Annotated[model, Query()], "return": None}  # evaluated, not a string
    probe = FastAPI()
    probe.post("/")(_probe)
    return probe.openapi()["paths"]["/"]["post"]["parameters"]


CLASSIFY_QUERY = declared_query(ClassifyParams)


def query_params(request: Request) -> ClassifyParams:
    """The classify routes' query parameters, validated as FastAPI validates `Annotated[ClassifyParams, Query()]`
    (each name's last value; the same errors, at `query.<name>`), without its per-request walk over the model's
    fields and their annotations (about a tenth of a millisecond per request)."""
    try:
        return ClassifyParams.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)],
                                     body=None) from None


def _merge_form(request: Request, params: ClassifyParams, body: Body) -> ClassifyParams:
    """Form fields fill in parameters the query string did not give."""
    extra = {k: v for k, v in body.fields.items() if k in ClassifyParams.model_fields and k not in request.query_params}
    if not extra:
        return params
    try:
        return ClassifyParams.model_validate({**params.model_dump(exclude_unset=True), **extra})
    except ValidationError as exc:
        raise InvalidParameters("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc


def _check_early(registry: ModelRegistry, params: ClassifyParams) -> None:
    """503 / 404 before reading a byte of the body (a form field may still name the model later)."""
    if not registry.ready or params.model is not None:
        registry.get(params.model, params.version)


def options_of(params: ClassifyParams, model: LoadedModel) -> ClassifyOptions:
    """The request's options for the pipeline; 422 for thresholds the model cannot take, before decoding."""
    options = ClassifyOptions(top_k=params.top_k, include_importance=params.include_importance,
                              include_spectrogram=params.include_spectrogram,
                              include_segments=params.include_segments, min_score=params.min_score,
                              thresholds=parse_thresholds(params.thresholds))
    options.event_rules(model.info)
    return options


async def classify_upload(model: LoadedModel, upload: Upload, options: ClassifyOptions,
                          started: float) -> ClassifyResult:
    if upload.size == 0:
        raise EmptyAudio("uploaded file is empty")
    return await model.classify(upload.file, options, started)


@router.post("/v1/classify", response_model=ClassifyResult, response_model_exclude_none=True,
             responses=CLASSIFY_RESPONSES, openapi_extra={"parameters": CLASSIFY_QUERY, **AUDIO_BODY},
             tags=["classify"])
async def classify(request: Request) -> Response:
    """Classify one clip: multipart field `file`, or the raw body (audio/*, application/octet-stream).

    Audio longer than the model's long-audio threshold is cut into overlapping windows; the answer
    then carries per-window `segments`, and each clip-level score is the best window's (for the
    background label the lowest window's).
    """
    started = time.perf_counter()
    params = query_params(request)
    settings, registry = request.app.state.settings, request.app.state.registry
    _check_early(registry, params)
    async with receive_body(request, settings.max_upload_bytes) as body:
        params = _merge_form(request, params, body)
        with registry.get(params.model, params.version).hold() as model:  # the whole request on this version
            upload = body.single("file")
            return json_response(await classify_upload(model, upload, options_of(params, model), started))


@router.post("/v1/classify/batch", response_model=BatchResult, response_model_exclude_none=True,
             responses=ERRORS, openapi_extra={"parameters": CLASSIFY_QUERY, **BATCH_BODY}, tags=["classify"])
async def classify_batch(request: Request) -> Response:
    """Several files (repeated multipart field `file`), answered in order; a bad file gets its own error."""
    started = time.perf_counter()
    params = query_params(request)
    settings, registry = request.app.state.settings, request.app.state.registry
    _check_early(registry, params)
    async with receive_body(request, settings.max_upload_bytes, allow_raw=False,
                            max_files=settings.max_batch_files) as body:
        params = _merge_form(request, params, body)
        with registry.get(params.model, params.version).hold() as model:  # every file on this version
            files = [upload for name, upload in body.files if name in ("file", "files")]
            if not files:
                raise InvalidParameters("send one or more files in the multipart field 'file'")
            options = options_of(params, model)

            async def one(index: int, upload: Upload) -> BatchItem:
                try:
                    result = await classify_upload(model, upload, options, started)
                except DiffresError as exc:
                    err = public(exc)
                    return BatchItem(index=index, filename=upload.filename, status=err.status,
                                     error=ErrorDetail(code=err.code, message=err.message))
                except Exception:  # a bug on one file must not lose the others' results
                    log.exception("file %d (%s) of a batch failed", index, upload.filename)
                    return BatchItem(index=index, filename=upload.filename, status=500,
                                     error=ErrorDetail(code="internal_error", message="internal error"))
                return BatchItem(index=index, filename=upload.filename, status=200, result=result)

            results = await asyncio.gather(*(one(i, f) for i, f in enumerate(files)))
    total = round((time.perf_counter() - started) * 1000, 3)
    return json_response(BatchResult(
        model=model.name, results=list(results),
        timing_ms=Timing(decode=sum(r.result.timing_ms.decode for r in results if r.result),
                         inference=sum(r.result.timing_ms.inference for r in results if r.result), total=total)))


@router.get("/v1/models", response_model=ModelList, responses={503: ERRORS[503]}, tags=["models"])
async def list_models(settings: SettingsDep, registry: RegistryDep) -> ModelList:
    """Every model that serves, described by its highest ready version (labels, sample rate, DiffRes delta,
    build identity `version`, `repository_version`), and every version of it with its state."""
    if not registry.ready:
        registry.get(None)  # raises the 503
    return ModelList(models=[describe(registry, m, default=name == settings.default_model)
                             for name, m in sorted(registry.models.items())], default_model=settings.default_model)


def describe(registry: ModelRegistry, model: LoadedModel, default: bool) -> ModelDescription:
    return model.pipeline.describe(default=default).model_copy(update={
        "repository_version": model.version, "versions": registry.version_states(model.name)})


@router.get("/healthz", response_model=Health, tags=["probes"])
async def healthz() -> Health:
    """Liveness: the process serves HTTP (models may still be loading)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, tags=["probes"], responses={
    503: {"model": ErrorResponse, "description": "Loading, shutting down, or degraded: a model file failed to load "
                                                 "(code `degraded`; the others still serve)"}})
async def readyz(request: Request, settings: SettingsDep, registry: RegistryDep) -> Any:
    """Readiness: every model file loaded and warmed up; one failed file means degraded, not ready."""
    retry = {"Retry-After": str(settings.retry_after_s)}
    if not registry.ready:
        return error_response(request, 503, "not_ready", f"not ready: {registry.status}", retry)
    if registry.failed:
        failed = "; ".join(f"{name}: {why}" for name, why in sorted(registry.failed.items()))
        return error_response(request, 503, "degraded", f"degraded: serving {', '.join(sorted(registry.models))}; "
                              f"failed to load: {failed}", retry)
    return Readiness(status="ready", models=sorted(registry.models), failed=registry.failed)


@router.get("/metrics", tags=["probes"], response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus text exposition."""
    content, media_type = metrics.render()
    return Response(content, media_type=media_type)
