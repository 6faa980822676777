"""`python -m diffres.server.ray_main` (= `make serve-ray`): the service on Ray Serve, N replicas, in the foreground.

Starts a local Ray sized to the CPUs this container may use, deploys deploy/ray/serve.yaml with
DIFFRES_HOST/DIFFRES_PORT, DIFFRES_GRPC_PORT (Ray's gRPC proxy with the config's `grpc_options` on that
port; unset: no gRPC, as with `diffres serve`), DIFFRES_RAY_REPLICAS and DIFFRES_RAY_GPUS_PER_REPLICA
applied, and waits.
Every replica reserves CPUs / replicas CPUs, which size its onnxruntime calls. Ctrl-C or
SIGTERM shuts Serve down (replicas finish their requests) and then Ray. Ray's Prometheus endpoint,
with every replica's metrics, is on DIFFRES_RAY_METRICS_PORT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import serve

from diffres.server.config import Settings, get_settings
from diffres.server import ray_proxy
from diffres.server.logs import configure_logging
from diffres.server.ray_serve import DiffResReplica
from diffres.cpu import available_cpus

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
GRPC_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"  # the gRPC proxy's message limit (Ray's default: 2 GiB)
SERVE_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "ray" / "serve.yaml"


class RayUnavailable(RuntimeError):
    """Ray itself could not start a local cluster here (not a fault of the service)."""


def load_config(path: Path = SERVE_CONFIG) -> dict[str, Any]:
    """The serve config: one application with one deployment (the ones make serve-ray runs)."""
    config = yaml.safe_load(path.read_text())
    apps = config.get("applications") or []
    if len(apps) != 1 or len(apps[0].get("deployments") or []) != 1:
        raise ValueError(f"{path}: expected one application with one deployment")
    return config


def deployment_options(config: dict[str, Any], settings: Settings, cpus: int) -> dict[str, Any]:
    """The config's deployment options with the settings' replicas and an equal CPU share each."""
    options = dict(config["applications"][0]["deployments"][0])
    options.pop("autoscaling_config", None)  # a fixed DIFFRES_RAY_REPLICAS here
    options["num_replicas"] = settings.ray_replicas
    actor = dict(options.get("ray_actor_options") or {})
    actor["num_cpus"] = cpus / settings.ray_replicas
    if settings.ray_gpus_per_replica:
        actor["num_gpus"] = settings.ray_gpus_per_replica
    options["ray_actor_options"] = actor
    return options


def grpc_options(config: dict[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The config's gRPC proxy options on DIFFRES_GRPC_PORT; None (no gRPC) when that is unset."""
    if settings.grpc_port is None:
        return None
    return {**config.get("grpc_options", {}), "port": settings.grpc_port}


def start(settings: Settings, config_path: Path = SERVE_CONFIG) -> str:
    """Start a local Ray and Serve and deploy; returns the service URL once every replica is ready."""
    config = load_config(config_path)
    app_config = config["applications"][0]
    cpus = available_cpus()
    # Ray's proxy answers a JSON 503 + Retry-After when a replica dies mid-request (server/ray_proxy.py).
    os.environ.setdefault(PROXY_CALLBACK_ENV, ray_proxy.CALLBACK)
    os.environ.setdefault(GRPC_MESSAGE_ENV, str(settings.max_tensor_bytes))  # DIFFRES_MAX_TENSOR_BYTES over Ray too
    env = {k: v for k, v in os.environ.items() if k.startswith("DIFFRES_") or k in (PROXY_CALLBACK_ENV,
                                                                                    GRPC_MESSAGE_ENV)}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(num_cpus=cpus, include_dashboard=False, _metrics_export_port=settings.ray_metrics_port,
                 runtime_env={"env_vars": env}, configure_logging=False)
    except Exception as exc:
        raise RayUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if on_sigterm is not None:  # Ray's driver installs a SIGTERM handler that aborts: keep the caller's
        signal.signal(signal.SIGTERM, on_sigterm)
    print(f"ray: local cluster at {ray.get_runtime_context().gcs_address} with {cpus} CPUs", flush=True)
    http_options = {**config.get("http_options", {}), "host": settings.host, "port": settings.port}
    serve.start(http_options=http_options, grpc_options=grpc_options(config, settings),
                proxy_location=config.get("proxy_location", "EveryNode"), logging_config=config.get("logging_config"))
    args = {**(app_config.get("args") or {}), "model_dir": str(settings.model_dir.resolve())}
    options = deployment_options(config, settings, cpus)
    serve.run(DiffResReplica.options(**options).bind(args), name=app_config["name"],
              route_prefix=app_config.get("route_prefix", "/"))
    return f"http://{settings.host}:{settings.port}"


def stop() -> None:
    """Serve first (replicas drain and run their lifespan shutdown), then the local Ray."""
    try:
        if ray.is_initialized():
            serve.shutdown()
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffres.server.ray_main", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=SERVE_CONFIG, help="Ray Serve config (deploy/ray/serve.yaml)")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through `finally` on SIGTERM too
    try:
        url = start(settings, args.config)
        grpc = f", gRPC on {settings.host}:{settings.grpc_port}" if settings.grpc_port is not None else ""
        print(f"ready: {url}{grpc} ({settings.ray_replicas} Ray Serve replicas); Ray metrics: "
              f"http://127.0.0.1:{settings.ray_metrics_port}/metrics; Ctrl-C stops", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 130
    except RayUnavailable as exc:
        print(f"ray: cannot start a local cluster: {exc}", file=sys.stderr, flush=True)
        return 3
    finally:
        stop()
        print("stopped: Serve and Ray shut down", flush=True)


if __name__ == "__main__":
    sys.exit(main())
