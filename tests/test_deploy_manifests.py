"""deploy/: Kubernetes manifests validated offline, and kept consistent with the service.

Core resources (Deployment, Service, HPA, PodDisruptionBudget) are validated strictly against the
official Kubernetes schemas bundled by the PyPI package kubernetes-validate; the RayService and
InferenceService against the minimal CRD schemas vendored in deploy/schemas/ (their pod templates
and containers against the same Kubernetes schemas). Nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[interop]')")
jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"  # oldest Kubernetes these manifests target (preStop `sleep` is GA-enabled from 1.30)
CORE_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
CRD_SCHEMAS = {"RayService": "rayservice.ray.io-v1.json",
               "InferenceService": "inferenceservice.serving.kserve.io-v1beta1.json"}
KSERVE_GRPC = DEPLOY / "kserve" / "inferenceservice-grpc.yaml"


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(path: Path) -> dict[str, Any]:
    (doc,) = load(path)
    return doc


@cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    """The vendored CRD schema, with `$ref`s into kubernetes-validate's strict Kubernetes definitions."""
    schema = json.loads((DEPLOY / "schemas" / CRD_SCHEMAS[kind]).read_text())
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    strict = sorted(p.name for p in folder.iterdir() if p.name.startswith(f"v{K8S_VERSION}.") and "strict" in p.name)
    definitions = json.loads((folder / strict[-1] / "_definitions.json").read_text())
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(doc["kind"]).iter_errors(doc)]


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, str]:
    """Literal values; one from a Secret or elsewhere (valueFrom) as the empty string."""
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def all_containers() -> list[dict[str, Any]]:
    deployment = one(DEPLOY / "k8s" / "deployment.yaml")["spec"]["template"]["spec"]
    isvc = one(DEPLOY / "kserve" / "inferenceservice.yaml")["spec"]["predictor"]
    isvc_grpc = one(KSERVE_GRPC)["spec"]["predictor"]
    cluster = one(DEPLOY / "kuberay" / "rayservice.yaml")["spec"]["rayClusterConfig"]
    pods = [deployment, isvc, isvc_grpc, cluster["headGroupSpec"]["template"]["spec"],
            *(g["template"]["spec"] for g in cluster["workerGroupSpecs"])]
    return [c for pod in pods for c in pod["containers"]]


# ------------------------------------------------------------------ schema validation

@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_manifests_pass_the_strict_kubernetes_schemas(path: Path) -> None:
    for doc in load(path):
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validation_catches_mistakes() -> None:
    """The validator really checks: a misspelt probe and a string replica count are refused."""
    good = one(DEPLOY / "k8s" / "deployment.yaml")
    misspelt = copy.deepcopy(good)
    c = misspelt["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["replicas"] = "two"
    for bad in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", [DEPLOY / "kuberay" / "rayservice.yaml", DEPLOY / "kserve" / "inferenceservice.yaml",
                                  KSERVE_GRPC], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_custom_resources_pass_their_vendored_crd_schemas(path: Path) -> None:
    assert crd_errors(one(path)) == []


def test_crd_schemas_catch_mistakes() -> None:
    """Unquoted rayStartParams, an unknown predictor field and a bad container field are refused."""
    ray = one(DEPLOY / "kuberay" / "rayservice.yaml")
    ray["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    isvc = one(DEPLOY / "kserve" / "inferenceservice.yaml")
    isvc["spec"]["predictor"]["minReplica"] = 1
    isvc_container = one(DEPLOY / "kserve" / "inferenceservice.yaml")
    isvc_container["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    for bad in (ray, isvc, isvc_container):
        assert crd_errors(bad), f"accepted a broken {bad['kind']}"


# ------------------------------------------------------------------ consistency with the service

def test_deployment_probes_resources_and_security() -> None:
    pod = one(DEPLOY / "k8s" / "deployment.yaml")["spec"]["template"]["spec"]
    c = container(pod, "diffres")
    e = env(c)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
    assert str(port) == e["DIFFRES_PORT"] and e["DIFFRES_HOST"] == "0.0.0.0"
    # Requests = limits = the CPUs onnxruntime is sized to: a whole CPU share each, no oversubscription.
    cpus = e["DIFFRES_CPUS"]
    assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"] == cpus
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "read-only root: uploads spool to /tmp"
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > int(e["DIFFRES_SHUTDOWN_TIMEOUT_S"]) + pre_stop


def test_pods_mount_the_model_repository_and_reload_it() -> None:
    """The repository volume at DIFFRES_MODEL_DIR, read-only, from the claim models-pvc.yaml makes; polling on;
    admin keys only from a Secret; the KubeRay workers mount the same claim."""
    pvc = one(DEPLOY / "k8s" / "models-pvc.yaml")
    pod = one(DEPLOY / "k8s" / "deployment.yaml")["spec"]["template"]["spec"]
    c = container(pod, "diffres")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == env(c)["DIFFRES_MODEL_DIR"] == "/srv/models" and mount["readOnly"]
    volume = next(v for v in pod["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert float(env(c)["DIFFRES_MODEL_POLL_S"]) > 0
    keys = next(e for e in c["env"] if e["name"] == "DIFFRES_ADMIN_KEYS")
    assert "value" not in keys and keys["valueFrom"]["secretKeyRef"]["optional"]
    strategy = one(DEPLOY / "k8s" / "deployment.yaml")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "a rolling restart replaces one pod at a time"
    worker = one(DEPLOY / "kuberay" / "rayservice.yaml")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    ray_pod = worker["template"]["spec"]
    assert ray_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert ray_pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/srv/models"


def test_service_hpa_and_pdb_select_the_deployment() -> None:
    deployment = one(DEPLOY / "k8s" / "deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(DEPLOY / "k8s" / "service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = one(DEPLOY / "k8s" / "hpa.yaml")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["minReplicas"] >= 2
    pdb = one(DEPLOY / "k8s" / "pdb.yaml")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()


def test_kserve_predictor_serves_oip_v2_on_kserve_port() -> None:
    from diffres.server.app import create_app

    predictor = one(DEPLOY / "kserve" / "inferenceservice.yaml")["spec"]["predictor"]
    c = container(predictor, "kserve-container")  # the name KServe expects for a custom predictor
    assert c["ports"][0]["containerPort"] == int(env(c)["DIFFRES_PORT"]) == 8080
    paths = set(create_app().openapi()["paths"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] in paths and c[probe]["httpGet"]["path"].startswith("/v2/health/")
    assert c["resources"]["requests"]["cpu"] == env(c)["DIFFRES_CPUS"]


def test_grpc_ports_agree_with_the_service_settings() -> None:
    """OIP v2 over gRPC wherever the service runs: the port each manifest declares is DIFFRES_GRPC_PORT."""
    pod = one(DEPLOY / "k8s" / "deployment.yaml")["spec"]["template"]["spec"]
    c = container(pod, "diffres")
    grpc_port = next(p for p in c["ports"] if p["name"] == "grpc")["containerPort"]
    assert str(grpc_port) == env(c)["DIFFRES_GRPC_PORT"] == "8001"
    service = {p["name"]: p for p in one(DEPLOY / "k8s" / "service.yaml")["spec"]["ports"]}
    assert service["grpc"]["targetPort"] == "grpc" and service["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    # KServe: the gRPC predictor's one port is named h2c and is DIFFRES_GRPC_PORT; probes use the HTTP side.
    predictor = one(KSERVE_GRPC)["spec"]["predictor"]
    k = container(predictor, "kserve-container")
    (port,) = k["ports"]
    assert port["name"] == "h2c" and str(port["containerPort"]) == env(k)["DIFFRES_GRPC_PORT"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert str(k[probe]["httpGet"]["port"]) == env(k)["DIFFRES_PORT"]
        assert k[probe]["httpGet"]["path"].startswith("/v2/health/")
    assert one(KSERVE_GRPC)["metadata"]["name"] != one(DEPLOY / "kserve" / "inferenceservice.yaml")["metadata"]["name"]


def test_ray_grpc_ingress_is_the_shipped_servicer() -> None:
    """Ray's gRPC proxy registers this proto's servicer (importable), on the port the head pod declares."""
    import importlib

    local = yaml.safe_load((DEPLOY / "ray" / "serve.yaml").read_text())
    rayservice = one(DEPLOY / "kuberay" / "rayservice.yaml")
    cluster = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert local["grpc_options"] == cluster["grpc_options"]
    (function,) = local["grpc_options"]["grpc_servicer_functions"]
    from diffres.server.ray_grpc import SERVICER_FUNCTION

    assert function == SERVICER_FUNCTION
    module, _, name = function.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports["grpc"] == cluster["grpc_options"]["port"]
    from diffres.server.config import Settings

    workers = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    for c in (head, *workers):  # every node runs a proxy: its message limit is DIFFRES_MAX_TENSOR_BYTES
        assert env(c)["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"] == str(Settings.model_fields["max_tensor_bytes"].default)


def test_every_diffres_variable_in_the_manifests_is_a_setting() -> None:
    from diffres.server.config import Settings

    fields = {f"DIFFRES_{name.upper()}" for name in Settings.model_fields}
    used = {name for c in all_containers() for name in env(c) if name.startswith("DIFFRES_")}
    assert used and used <= fields, f"unknown settings: {sorted(used - fields)}"


def test_images_run_as_non_root() -> None:
    for pod_path in ("k8s/deployment.yaml", "kuberay/rayservice.yaml", "kserve/inferenceservice.yaml",
                     "kserve/inferenceservice-grpc.yaml"):
        text = (DEPLOY / pod_path).read_text()
        assert "runAsNonRoot: true" in text and "allowPrivilegeEscalation: false" in text, pod_path


# ------------------------------------------------------------------ the Ray Serve config, two copies in step

def serve_schema() -> Any:
    schema = pytest.importorskip("ray.serve.schema", reason="Ray is not installed (pip install -e '.[ray]')")
    return schema.ServeDeploySchema


def test_serve_configs_pass_rays_own_schema() -> None:
    schema = serve_schema()
    local = schema.model_validate(yaml.safe_load((DEPLOY / "ray" / "serve.yaml").read_text()))
    rayservice = one(DEPLOY / "kuberay" / "rayservice.yaml")
    cluster = schema.model_validate(yaml.safe_load(rayservice["spec"]["serveConfigV2"]))
    assert local.applications[0].import_path == cluster.applications[0].import_path == "diffres.server.ray_serve:build"


def test_rayservice_embeds_serve_yaml_with_autoscaling_only_changed() -> None:
    serve_schema()
    local = yaml.safe_load((DEPLOY / "ray" / "serve.yaml").read_text())["applications"][0]
    rayservice = one(DEPLOY / "kuberay" / "rayservice.yaml")
    cluster = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    differs = {"num_replicas", "autoscaling_config", "ray_actor_options"}
    assert set(local["deployments"][0]["user_config"]) == {"models_generation"}  # the rolling reload's knob
    local_d, cluster_d = local["deployments"][0], cluster["deployments"][0]
    assert {k: v for k, v in local_d.items() if k not in differs} == \
           {k: v for k, v in cluster_d.items() if k not in differs}
    assert {k: v for k, v in local.items() if k not in ("deployments", "args")} == \
           {k: v for k, v in cluster.items() if k not in ("deployments", "args")}
    # One replica per worker pod: its num_cpus is the pod's CPU limit (= its onnxruntime threads).
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert str(cluster_d["ray_actor_options"]["num_cpus"]) == worker["resources"]["limits"]["cpu"]
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0", "no replicas on the head pod"
