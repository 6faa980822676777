"""The service's own API (/v1), probes and /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from app.config import Settings
from app.errors import ApiError, InvalidParameters, api_error, error_response
from app.inference import ClassifyOptions, classify_upload
from app.metrics import Metrics
from app.models import ModelRegistry
from app.schemas import (
    BatchItem,
    BatchResponse,
    ClassifyResponse,
    ErrorDetail,
    ErrorResponse,
    Health,
    ModelDescription,
    ModelList,
    Readiness,
    Timing,
)
from app.uploads import Body, Upload, receive_body
from runtime.errors import AudioError

log = logging.getLogger("app.routes")
router = APIRouter()


class ClassifyParams(BaseModel):
    """Query parameters of the classify routes (multipart form fields of the same names also work)."""

    model: str | None = Field(None, max_length=100, description="Model name (file stem); default: the default model")
    top_k: int = Field(5, ge=1, le=1000, description="Labels to return, best first (all if above the label count)")
    include_importance: bool = Field(False, description="Add the per-frame DiffRes importance curve")
    include_spectrogram: bool = Field(
        False, description="Add the log-mel, importance and merged frames the classifier saw (`spectrogram`); "
                           "for audio that is not windowed (up to the model's long_audio_s)")
    min_score: float | None = Field(
        None, ge=0, le=1, description="Event threshold: a window fires for its best non-background label when that "
                                      "label's probability reaches it; default: the model's min_score (GET /v1/models)")
    thresholds: str = Field(
        "", max_length=4000, description="Per-label event thresholds overriding min_score, `label:score,label:score`")


def _state(request: Request) -> tuple[Settings, ModelRegistry, Metrics]:
    state = request.app.state
    return state.settings, state.registry, state.metrics


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
        registry.get(params.model)


AUDIO_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}}}}},
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        400: "Undecodable, empty, non-finite or too short audio", 404: "Unknown model",
        413: "Upload or audio duration over the limit", 415: "Unsupported content type",
        422: "Invalid parameters", 503: "Not ready, or overloaded (see Retry-After)"}.items()
}


@router.post("/v1/classify", response_model=ClassifyResponse, response_model_exclude_none=True,
             responses=ERRORS, openapi_extra=AUDIO_BODY, tags=["classify"])
async def classify(request: Request, params: Annotated[ClassifyParams, Query()]) -> ClassifyResponse:
    """Classify one clip: multipart field `file`, or the raw body (audio/*, application/octet-stream).

    Audio longer than the model's long-audio threshold is cut into overlapping windows; the answer
    then carries per-window `segments` and the clip-level mean of the window probabilities.
    """
    started = time.perf_counter()
    settings, registry, metrics = _state(request)
    _check_early(registry, params)
    async with receive_body(request, settings.max_upload_bytes) as body:
        params = _merge_form(request, params, body)
        model = registry.get(params.model)
        upload = body.single("file")
        return await classify_upload(upload, model, ClassifyOptions.of(params), settings, metrics, started)


@router.post("/v1/classify/batch", response_model=BatchResponse, response_model_exclude_none=True,
             responses=ERRORS, openapi_extra=BATCH_BODY, tags=["classify"])
async def classify_batch(request: Request, params: Annotated[ClassifyParams, Query()]) -> BatchResponse:
    """Several files (repeated multipart field `file`), answered in order; a bad file gets its own error."""
    started = time.perf_counter()
    settings, registry, metrics = _state(request)
    _check_early(registry, params)
    async with receive_body(request, settings.max_upload_bytes, allow_raw=False,
                            max_files=settings.max_batch_files) as body:
        params = _merge_form(request, params, body)
        model = registry.get(params.model)
        files = [upload for name, upload in body.files if name in ("file", "files")]
        if not files:
            raise InvalidParameters("send one or more files in the multipart field 'file'")
        options = ClassifyOptions.of(params)

        async def one(index: int, upload: Upload) -> BatchItem:
            try:
                result = await classify_upload(upload, model, options, settings, metrics, started)
            except (ApiError, AudioError) as exc:
                err = api_error(exc)
                return BatchItem(index=index, filename=upload.filename, status=err.status,
                                 error=ErrorDetail(code=err.code, message=err.message))
            except Exception:  # a bug on one file must not lose the others' results
                log.exception("file %d (%s) of a batch failed", index, upload.filename)
                return BatchItem(index=index, filename=upload.filename, status=500,
                                 error=ErrorDetail(code="internal_error", message="internal error"))
            return BatchItem(index=index, filename=upload.filename, status=200, result=result)

        results = await asyncio.gather(*(one(i, f) for i, f in enumerate(files)))
    total = round((time.perf_counter() - started) * 1000, 3)
    return BatchResponse(model=model.name, results=list(results),
                         timing_ms=Timing(decode=sum(r.result.timing_ms.decode for r in results if r.result),
                                          inference=sum(r.result.timing_ms.inference for r in results if r.result),
                                          total=total))


@router.get("/v1/models", response_model=ModelList, responses={503: ERRORS[503]}, tags=["models"])
async def list_models(request: Request) -> ModelList:
    """Every loaded model with its labels, sample rate, DiffRes delta and version."""
    settings, registry, _ = _state(request)
    if not registry.ready:
        registry.get(None)  # raises the 503
    out = []
    for name, m in sorted(registry.models.items()):
        i, sr = m.info, m.info.sample_rate
        out.append(ModelDescription(
            name=name, labels=list(i.labels), sample_rate=sr, delta=i.delta, version=i.version,
            clip_seconds=i.clip_seconds, hop_ms=i.hop_ms, win_ms=i.win_ms, n_mels=i.n_mels, frontend=i.frontend,
            resolution=i.resolution, default=name == settings.default_model, window_s=m.plan.window / sr,
            window_hop_s=m.plan.hop / sr, long_audio_s=m.plan.long_threshold / sr,
            background_label=i.background_label, min_score=i.min_score))
    return ModelList(models=out, default_model=settings.default_model)


@router.get("/healthz", response_model=Health, tags=["probes"])
async def healthz() -> Health:
    """Liveness: the process serves HTTP (models may still be loading)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, tags=["probes"], responses={
    503: {"model": ErrorResponse, "description": "Loading, shutting down, or degraded: a model file failed to load "
                                                 "(code `degraded`; the others still serve)"}})
async def readyz(request: Request) -> Any:
    """Readiness: every model file loaded and warmed up; one failed file means degraded, not ready."""
    settings, registry, _ = _state(request)
    retry = {"Retry-After": str(settings.retry_after_s)}
    if not registry.ready:
        return error_response(request, 503, "not_ready", f"not ready: {registry.status}", retry)
    if registry.failed:
        failed = "; ".join(f"{name}: {why}" for name, why in sorted(registry.failed.items()))
        return error_response(request, 503, "degraded", f"degraded: serving {', '.join(sorted(registry.models))}; "
                              f"failed to load: {failed}", retry)
    return Readiness(status="ready", models=sorted(registry.models), failed=registry.failed)


@router.get("/metrics", tags=["probes"], response_class=Response)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition."""
    content, media_type = request.app.state.metrics.render()
    return Response(content, media_type=media_type)

