"""The service as a Ray Serve deployment: the same FastAPI app (`create_app`) behind `serve.ingress`,
and the same OIP v2 gRPC service behind Ray's gRPC proxy (server/ray_grpc.py).

Each replica builds its own app, so its own onnxruntime sessions and micro-batchers; its
onnxruntime threads follow the CPUs Ray reserved for it (`ray_actor_options.num_cpus`), so N
replicas share the machine instead of each sizing itself to all of it. Readiness is Ray's health
check: a replica counts as started only once its models are warm, and one whose models fail is
replaced. `build` is the application builder that deploy/ray/serve.yaml, `serve run` and KubeRay's
RayService import; `python -m diffres.server.ray_main` (`make serve-ray`) runs it locally.
Ray is an optional extra (`pip install .[ray]`): nothing of the plain service imports this module.

Model reloads go replica by replica through Ray's own rolling update: the deployment's `user_config`
(`models_generation` in deploy/ray/serve.yaml) is a lightweight option, so changing it makes Ray call
`reconfigure` on the running replicas, `rolling_update_percentage` of them at a time (20% by default:
one at a time below ten replicas), each replica taking traffic as usual while it reloads (the
registry's safe reload: the new version beside the old, checked, then swapped) and counting as updated
once its reload is done. The repository API's load and unload are refused here: a call reaches one
replica, and replicas would drift apart (docs/repository.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from diffres.server.config import Settings
from diffres.server.logs import configure_logging
from diffres.server.app import create_app
from diffres.server.ray_grpc import GrpcIngress
from diffres.server.ray_metrics import MetricsMirror

log = logging.getLogger(__name__)

DEPLOYMENT = "DiffRes"  # deploy/ray/serve.yaml names it (the same) for every launch
METRICS_SYNC_S = 2.0
READY_WAIT_S = 300.0  # the first health check waits this long for model loading and warm-up
ADMIN_OFF = ("under Ray Serve a repository call reaches one replica only: reload every replica by changing the "
             "deployment's user_config models_generation (docs/repository.md), or set DIFFRES_MODEL_POLL_S")


def replica_cpus(settings: Settings, reserved_cpus: float) -> int:
    """CPUs one replica's onnxruntime calls use: the explicit setting, else the CPUs Ray reserved (>= 1)."""
    return settings.cpus or max(1, int(reserved_cpus))


def replica_settings(overrides: dict[str, Any]) -> Settings:
    """Settings of this replica: environment + overrides, onnxruntime sized to this actor's CPU reservation
    (server.loaded.call_layout turns the CPUs into calls and threads). No gRPC port of its own: gRPC
    reaches replicas through Ray's proxy, which owns DIFFRES_GRPC_PORT."""
    settings = Settings(**overrides)
    if settings.admin_loopback:  # Ray's proxies own the bind address, not this replica's DIFFRES_HOST
        raise ValueError("DIFFRES_ADMIN_LOOPBACK is not for Ray Serve: " + ADMIN_OFF)
    reserved = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    return settings.model_copy(update={"cpus": replica_cpus(settings, reserved), "grpc_port": None})


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class DiffResReplica(GrpcIngress):
    """One replica: its own app (HTTP through Ray's HTTP proxy, gRPC through its gRPC proxy: the methods of
    GrpcIngress), its metrics mirrored into Ray's, healthy once its models are warm."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self._mirror_task: asyncio.Task[None] | None = None
        self._web: FastAPI | None = None  # `app` is taken: Ray's wrapper exposes the ASGI app under that name
        self.settings = replica_settings(overrides or {})

    async def __serve_build_asgi_app__(self) -> FastAPI:
        """Called by Ray after __init__; Ray then runs the app's lifespan (model loading starts)."""
        if not logging.getLogger().handlers:  # JSON lines, as from `diffres serve` (Ray forwards them)
            configure_logging(self.settings.log_level, self.settings.log_format)
        self._web = create_app(self.settings)
        self._web.state.admin.refuse_all(ADMIN_OFF)
        self._mirror_task = asyncio.create_task(self._mirror_metrics(), name="ray-metrics-mirror")
        log.info("replica app built: onnxruntime on %d CPU(s)", self.settings.cpus)
        return self._web

    async def _mirror_metrics(self) -> None:
        assert self._web is not None
        mirror = MetricsMirror(self._web.state.metrics.registry)
        while True:
            try:
                mirror.sync()
            except Exception:  # metrics must never take the replica down
                log.exception("copying metrics to Ray failed")
            await asyncio.sleep(METRICS_SYNC_S)

    async def check_health(self) -> None:
        """Ray's health check = the app's readiness (/readyz): wait out loading and warm-up (the first
        check), then fail unless every model file is serving; Ray replaces a replica that fails."""
        assert self._web is not None
        deadline = asyncio.get_running_loop().time() + READY_WAIT_S
        while (registry := self._web.state.registry).status == "loading":
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"replica not ready after {READY_WAIT_S:.0f} s: still loading")
            await asyncio.sleep(0.2)
        if not registry.healthy:
            raise RuntimeError(f"replica not ready: {registry.status}; failed to load: {registry.failed}")

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray's lightweight update: a new user_config (models_generation) reloads the model repository on this
        replica; Ray calls it on `rolling_update_percentage` of the replicas at a time and waits for it.
        At a replica's start the start-up load reads the repository anyway: nothing to do then."""
        registry = self._web.state.registry if self._web is not None else None
        if registry is None or registry.status == "loading":
            return
        failures = await registry.reconcile(trigger=f"ray user_config {user_config}")
        if failures:  # the old versions keep serving; a failed reconfigure would only make Ray replace the replica
            log.error("replica reload left versions refused: %s", failures)

    async def __del__(self) -> None:
        """Ray tears the replica down (after the app's lifespan shutdown): stop copying metrics."""
        if self._mirror_task is not None:
            self._mirror_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mirror_task


def build(args: dict[str, Any]) -> Application:
    """Application builder (`import_path: app.ray_serve:build`); args are Settings overrides, e.g. model_dir."""
    return DiffResReplica.bind(dict(args))
