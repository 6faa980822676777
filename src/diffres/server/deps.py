"""What route handlers depend on, as FastAPI dependencies: the settings, the model registry, the metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from diffres.server.config import Settings
from diffres.server.metrics import Metrics
from diffres.server.registry import ModelRegistry


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
