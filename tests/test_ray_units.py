"""The Ray pieces that need no Ray cluster: deployment options, thread split, the proxy's 503, isolation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import tomllib
from starlette.types import Receive, Scope, Send

from diffres.server.config import Settings
from diffres.server.ray_proxy import (
    ReplicaLostMiddleware,
    SingleRequestIdMiddleware,
    middlewares,
)

ROOT = Path(__file__).resolve().parents[1]


def ray_main():  # imported per test: it needs ray, which is an optional extra
    pytest.importorskip("ray.serve", reason="Ray is not installed (pip install -e '.[ray]')")
    from diffres.server import ray_main as module
    return module


def test_replicas_split_the_cpus_and_take_the_config_options() -> None:
    m = ray_main()
    config = m.load_config()
    options = m.deployment_options(config, Settings(ray_replicas=2), cpus=2)
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1.0}
    assert options["max_ongoing_requests"] >= Settings().batch_size, "each replica's batcher must be fed"
    three = m.deployment_options(config, Settings(ray_replicas=3), cpus=2)
    assert three["ray_actor_options"]["num_cpus"] == pytest.approx(2 / 3)  # still placeable on 2 CPUs
    gpu = m.deployment_options(config, Settings(ray_replicas=2, ray_gpus_per_replica=1), cpus=8)
    assert gpu["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1}


def test_replica_cpus_follow_the_cpus_ray_reserved() -> None:
    pytest.importorskip("ray.serve", reason="Ray is not installed (pip install -e '.[ray]')")
    from diffres.server.ray_serve import replica_cpus

    assert replica_cpus(Settings(), 1.0) == 1
    assert replica_cpus(Settings(), 4.0) == 4
    assert replica_cpus(Settings(), 0.5) == 1  # a fractional share still runs one call
    assert replica_cpus(Settings(cpus=3), 1.0) == 3  # an explicit setting wins


async def _silent(scope: Scope, receive: Receive, send: Send) -> None:
    """What Ray's proxy does when the replica died: returns without a response."""


async def _answers(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 418, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"teapot"})


@pytest.mark.anyio
async def test_proxy_middleware_turns_no_answer_into_a_retryable_503() -> None:
    transport = httpx.ASGITransport(app=ReplicaLostMiddleware(_silent))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        r = await client.post("/v1/classify", content=b"x")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "replica_unavailable"
        oip = await client.post("/v2/models/digits/infer", content=b"{}")
        assert oip.status_code == 503 and isinstance(oip.json()["error"], str)  # the protocol's shape


@pytest.mark.anyio
async def test_proxy_middleware_passes_answers_through() -> None:
    transport = httpx.ASGITransport(app=ReplicaLostMiddleware(_answers))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        r = await client.get("/anything")
    assert (r.status_code, r.text) == (418, "teapot")
    assert [m.cls for m in middlewares()] == [SingleRequestIdMiddleware, ReplicaLostMiddleware]


async def _two_ids(scope: Scope, receive: Receive, send: Send) -> None:
    """The replica's answer after Ray's proxy appended its copy of the id."""
    headers = [(b"x-request-id", b"from-app"), (b"content-type", b"text/plain"), (b"x-request-id", b"ray")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.anyio
async def test_proxy_keeps_one_request_id() -> None:
    transport = httpx.ASGITransport(app=SingleRequestIdMiddleware(_two_ids))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        r = await client.get("/v1/models")
    assert r.headers.get_list("x-request-id") == ["from-app"] and r.text == "ok"


def test_ray_is_optional_for_the_service() -> None:
    """Not a base dependency, and importing the service never imports it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.lower().startswith("ray") for d in project["dependencies"])
    assert any(d.startswith("ray[serve]") for d in project["optional-dependencies"]["ray"])
    code = "import sys, diffres.server.app, diffres.cli; sys.exit(1 if 'ray' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_replicas_reload_through_rays_rolling_update() -> None:
    """user_config (models_generation) is the lightweight option whose change makes Ray call each replica's
    reconfigure, a share at a time; the repository API and keyless control are off under Ray (one replica
    per call would let replicas drift apart)."""
    pytest.importorskip("ray.serve", reason="Ray is not installed (pip install -e '.[ray]')")
    from ray.serve.schema import DeploymentSchema

    from diffres.server.ray_serve import ADMIN_OFF, DiffResReplica, replica_settings

    m = ray_main()
    deployment = m.load_config()["applications"][0]["deployments"][0]
    assert set(deployment["user_config"]) == {"models_generation"}
    assert DeploymentSchema.model_validate(deployment).user_config == deployment["user_config"]
    assert "user_config" in m.deployment_options(m.load_config(), Settings(), cpus=2)
    assert callable(getattr(DiffResReplica.func_or_class, "reconfigure", None))
    with pytest.raises(ValueError, match="DIFFRES_ADMIN_LOOPBACK is not for Ray Serve"):
        replica_settings({"admin_loopback": True})
    assert "models_generation" in ADMIN_OFF
