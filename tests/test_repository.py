"""Models change without a restart: the versioned repository, its API (HTTP and gRPC, driven by Triton's own
clients), safe reloads, admin keys.

Three layers: the repository scan and version policies as plain functions; the app in-process (httpx over
ASGI) for the API's answers, refusals, polling and metrics; and a real `diffres serve` (tools.loadtest.server)
for tritonclient over HTTP and gRPC, a classify storm across reloads, a stream across a reload and SIGHUP.
Repositories are built in tmp_path from the shipped models (a new version = a copy under a new number,
moved in whole, as an operator would).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from diffres import contract as c
from diffres.server.config import Settings, is_loopback
from diffres.server.repository import (LATEST, PolicyError, VersionPolicy, parse_policies, parse_policy,
                                       policy_from_config, scan)
from tests.conftest import MODEL_DIR, Served, metric_value, require_model, serve, tone, wav
from tools.loadtest.server import Server

pytestmark = pytest.mark.anyio
AUDIO = {"content-type": "audio/wav"}
ADMIN_KEY, API_KEY = "admin-0123456789", "api-0123456789"


# ------------------------------------------------------------------ repositories on disk

def add_version(repo: Path, name: str, version: int, source: Path | None = None) -> Path:
    """NAME/N/model.onnx, built beside and moved in whole (what a polling server must see)."""
    staging = repo / name / f".{version}.tmp"
    staging.mkdir(parents=True)
    shutil.copyfile(source or MODEL_DIR / f"{name}.onnx", staging / "model.onnx")
    target = repo / name / str(version)
    staging.rename(target)
    return target / "model.onnx"


def make_repo(root: Path, versions: tuple[int, ...] = (1,), digits_flat: bool = True) -> Path:
    """keywords in Triton's layout with `versions`, digits as a flat digits.onnx (version 1)."""
    require_model("keywords")
    repo = root / "models"
    repo.mkdir()
    for v in versions:
        add_version(repo, "keywords", v)
    if digits_flat:
        require_model("digits")
        shutil.copyfile(MODEL_DIR / "digits.onnx", repo / "digits.onnx")
    return repo


def corrupt(repo: Path, name: str, version: int) -> None:
    (repo / name / str(version)).mkdir(parents=True)
    (repo / name / str(version) / "model.onnx").write_bytes(b"\x08\x07 this is no onnx graph")


# ------------------------------------------------------------------ policies and the scan (no server)

def test_version_policies_read_as_triton_means_them() -> None:
    assert parse_policy("latest") == LATEST and parse_policy("latest:3") == VersionPolicy("latest", 3)
    assert parse_policy("all").kind == "all" and parse_policy("3, 1").versions == (1, 3)
    assert parse_policies("keywords=latest:2; digits=1,3 *=all") == {
        "keywords": VersionPolicy("latest", 2), "digits": VersionPolicy("specific", versions=(1, 3)),
        "*": VersionPolicy("all")}
    for bad in ("latest:0", "newest", "1,x", ""):
        with pytest.raises(PolicyError):
            parse_policy(bad)
    with pytest.raises(PolicyError, match="MODEL=POLICY"):
        parse_policies("keywords")
    assert VersionPolicy("latest", 2).select([1, 2, 3]) == {2, 3}
    assert VersionPolicy("specific", versions=(1, 5)).select([1, 2, 3]) == {1}
    assert VersionPolicy("all").select([1, 2]) == {1, 2}


@pytest.mark.parametrize("text,expected", [
    ('name: "k"\nversion_policy: { latest: { num_versions: 2 } }', "latest:2"),
    ("version_policy { specific { versions: [1, 3] } }  # pinned", "1,3"),
    ("version_policy: { specific: { versions: 4 versions: 2 } }", "2,4"),
    ("version_policy: {\n  all: { }\n}\nmax_batch_size: 8", "all"),
    ("# version_policy: { all {} }\nmax_batch_size: 8", None),
])
def test_config_pbtxt_version_policy(text: str, expected: str | None) -> None:
    policy = policy_from_config(text)
    assert (str(policy) if policy else None) == expected
    if policy is not None:  # the generator writes it back the same way (diffres.triton)
        assert policy_from_config(policy.pbtxt) == policy


def test_scan_reads_both_layouts_and_picks_the_policy(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    for v in (1, 2, 10):
        (repo / "a" / str(v)).mkdir(parents=True)
        (repo / "a" / str(v) / "model.onnx").write_bytes(b"x")
    (repo / "a" / "3").mkdir()  # a version folder without its file yet is no version
    (repo / "a" / "config.pbtxt").write_text("version_policy: { latest: { num_versions: 2 } }")
    (repo / "a" / "labels.txt").write_text("x\n")
    (repo / "b.onnx").write_bytes(b"x")
    (repo / "a.onnx").write_bytes(b"x")  # the folder a/ is the model: the flat file is left alone
    (repo / "c").mkdir()
    (repo / "c" / "config.pbtxt").write_text("version_policy: { newest {} }")
    (repo / ".hidden").mkdir()
    found = scan(repo, {})
    assert sorted(found) == ["a", "b", "c"]
    assert sorted(found["a"].versions) == [1, 2, 10] and found["a"].wanted == {2, 10}
    assert found["b"].versions[1].path == repo / "b.onnx" and found["b"].wanted == {1}
    assert "config.pbtxt" in found["c"].problem and found["c"].wanted == set()
    pinned = scan(repo, parse_policies("a=1 *=all"))  # the setting wins over config.pbtxt; * for the rest
    assert pinned["a"].wanted == {1} and str(pinned["b"].policy) == "all"


def test_settings_check_policies_and_keep_keyless_control_on_loopback() -> None:
    assert Settings(version_policy="keywords=latest:2").version_policies == {"keywords": VersionPolicy("latest", 2)}
    with pytest.raises(ValidationError, match="version_policy"):
        Settings(version_policy="keywords=newest")
    assert Settings(admin_loopback=True, host="127.0.0.1").admin_loopback
    assert Settings(admin_loopback=True, host="::1").admin_loopback
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.org"):
        with pytest.raises(ValidationError, match="loopback"):
            Settings(admin_loopback=True, host=host)
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")
    keys = Settings(admin_keys=" a1 , a2 ").admin_keys
    assert [k.get_secret_value() for k in keys] == ["a1", "a2"] and "a1" not in repr(keys)


def test_serve_refuses_keyless_control_on_a_public_bind(tmp_path: Path) -> None:
    """`diffres serve` stops at start-up, naming the setting, before it listens."""
    env = {**os.environ, "DIFFRES_HOST": "0.0.0.0", "DIFFRES_ADMIN_LOOPBACK": "true", "DIFFRES_PORT": "0",
           "DIFFRES_MODEL_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "diffres", "serve"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "admin_loopback" in done.stderr and "DIFFRES_ADMIN_KEYS" in done.stderr


# ------------------------------------------------------------------ the app in-process

async def classify(s: Served, query: str = "") -> httpx.Response:
    return await s.client.post(f"/v1/classify{query}", content=wav(1.0), headers=AUDIO)


def index(s: Served) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(r["name"], r.get("version")): r for r in s.app.state.registry.index()}


async def test_versions_load_answer_and_unload_over_http(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    async with serve(model_dir=repo, admin_loopback=True) as s:
        first = await classify(s)
        assert first.status_code == 200 and first.json()["repository_version"] == 1
        add_version(repo, "keywords", 2)
        await s.app.state.registry.reconcile(["keywords"], trigger="test", force=False)  # what a poll or HUP does
        assert await s.app.state.registry.drained(30)  # version 1 left service at once; its release runs behind
        assert ((await s.client.post("/v2/repository/index")).json()) == [
            {"name": "digits", "version": "1", "state": "READY", "reason": ""},
            {"name": "keywords", "version": "1", "state": "UNAVAILABLE", "reason": "not selected by the version "
                                                                                  "policy latest:1"},
            {"name": "keywords", "version": "2", "state": "READY", "reason": ""}]
        add_version(repo, "keywords", 3)
        listed = {(r["name"], r["version"]): r for r in (await s.client.post("/v2/repository/index")).json()}
        assert listed[("keywords", "3")]["state"] == "UNAVAILABLE"  # on disk, not loaded yet
        assert (await s.client.post("/v2/repository/models/keywords/load")).status_code == 200
        assert await s.app.state.registry.drained(30)  # the load answers at once; the old version drains behind
        rows = index(s)
        assert rows[("keywords", "3")]["state"] == "READY" and rows[("digits", "1")]["state"] == "READY"
        assert "version policy latest:1" in rows[("keywords", "2")]["reason"]  # retired: the policy wants 3 only
        assert (await classify(s)).json()["repository_version"] == 3
        gone = await classify(s, "?version=2")
        assert gone.status_code == 404 and "has version 3 ready, not '2'" in gone.json()["error"]["message"]
        batch = await s.client.post("/v1/classify/batch?version=3", files=[("file", ("a.wav", wav(1.0)))])
        assert batch.json()["results"][0]["result"]["repository_version"] == 3
        meta = (await s.client.get("/v2/models/keywords/versions/3")).json()
        assert meta["versions"] == ["3"] and meta["parameters"]["repository_version"] == 3
        assert (await s.client.get("/v2/models/keywords/versions/3/ready")).json() == {
            "name": "keywords", "version": "3", "ready": True}
        assert (await s.client.get("/v2/models/keywords/versions/1/ready")).status_code == 404
        waveform = tone(0.5, 16000)
        body = {"inputs": [{"name": c.WAVEFORM, "shape": [1, len(waveform)], "datatype": "FP32",
                            "data": waveform.tolist()}], "outputs": [{"name": c.FRAMES_IN}]}
        answer = (await s.client.post("/v2/models/keywords/versions/3/infer", json=body)).json()
        assert answer["model_version"] == "3"  # the repository version, as Triton answers
        assert (await s.client.post("/v2/models/keywords/infer", json=body)).json()["model_version"] == "3"
        models = {m["name"]: m for m in (await s.client.get("/v1/models")).json()["models"]}
        assert models["keywords"]["repository_version"] == 3 and models["digits"]["repository_version"] == 1
        assert [(v["version"], v["state"]) for v in models["keywords"]["versions"]] == [
            (1, "UNAVAILABLE"), (2, "UNAVAILABLE"), (3, "READY")]
        assert (await s.client.post("/v2/repository/models/keywords/unload",
                                    json={"parameters": {"unload_dependents": False}})).status_code == 200
        assert (await s.client.post("/v2/repository/index", json={"ready": True})).json() == [
            {"name": "digits", "version": "1", "state": "READY", "reason": ""}]
        assert (await classify(s, "?model=keywords")).status_code == 404
        missing = await s.client.post("/v2/repository/models/nope/load")
        assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"
        config = await s.client.post("/v2/repository/models/keywords/load", json={"parameters": {"config": "{}"}})
        assert config.status_code == 400 and "config" in config.json()["error"]
        assert (await s.client.post("/v2/repository/models/keywords/load")).status_code == 200
        assert (await classify(s)).json()["repository_version"] == 3
        text = (await s.client.get("/metrics")).text
    assert metric_value(text, "diffres_model_loads_total", model="keywords", outcome="loaded") == 4
    assert metric_value(text, "diffres_model_unloads_total", model="keywords") == 3
    assert metric_value(text, "diffres_model_info", model="keywords", repository_version="3") == 1
    assert metric_value(text, "diffres_model_info", model="keywords", repository_version="2") == 0
    assert metric_value(text, "diffres_model_load_seconds_count", model="keywords", outcome="loaded") == 4


async def test_a_corrupt_file_is_refused_and_the_old_version_answers(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    async with serve(model_dir=repo, admin_loopback=True) as s:
        corrupt(repo, "keywords", 2)
        refused = await s.client.post("/v2/repository/models/keywords/load")
        error = refused.json()
        assert refused.status_code == 400 and error["code"] == "load_failed"
        assert "version 2" in error["error"] and "still serving version(s) 1" in error["error"]
        assert str(repo) not in error["error"]  # no paths in answers
        assert (await classify(s)).json()["repository_version"] == 1
        rows = index(s)
        assert rows[("keywords", "2")]["state"] == "UNAVAILABLE" and "load failed" in rows[("keywords", "2")]["reason"]
        assert rows[("keywords", "1")]["state"] == "READY"
        assert (await s.client.get("/readyz")).status_code == 200  # a later failure never takes the pod out
        # A flat file replaced by a broken one: refused too, the copy loaded before keeps serving.
        (repo / "digits.onnx").write_bytes(b"broken")
        await s.app.state.registry.reconcile(trigger="test")
        digits = (await s.client.get("/v1/models")).json()["models"][0]
        assert digits["name"] == "digits" and digits["versions"][0]["state"] == "READY"
        assert "the new one was refused" in digits["versions"][0]["reason"]
        assert (await classify(s, "?model=digits")).status_code == 200
        text = (await s.client.get("/metrics")).text
    assert metric_value(text, "diffres_model_loads_total", model="keywords", outcome="failed") == 1
    assert metric_value(text, "diffres_model_loads_total", model="digits", outcome="failed") == 1


async def test_polling_loads_settled_files_and_skips_broken_ones(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, digits_flat=False)
    (repo / "keywords" / "config.pbtxt").write_text("version_policy: { latest: { num_versions: 2 } }")
    async with serve(model_dir=repo, model_poll_s=0.1) as s:
        add_version(repo, "keywords", 2)
        corrupt(repo, "keywords", 3)
        deadline = time.monotonic() + 30
        while s.app.state.registry.ready_versions("keywords") != [1, 2] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # latest:2 wants 2 and 3; 3 is refused, so 1 stays beside 2 in its place
        assert s.app.state.registry.ready_versions("keywords") == [1, 2]
        assert (await classify(s, "?version=1")).json()["repository_version"] == 1
        assert (await classify(s)).json()["repository_version"] == 2
        await asyncio.sleep(0.5)  # more polls: the broken file is not retried while it is unchanged
        text = (await s.client.get("/metrics")).text
        assert metric_value(text, "diffres_model_loads_total", model="keywords", outcome="failed") == 1
        shutil.rmtree(repo / "keywords" / "3")
        add_version(repo, "keywords", 3)
        deadline = time.monotonic() + 30
        while s.app.state.registry.ready_versions("keywords") != [2, 3] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert s.app.state.registry.ready_versions("keywords") == [2, 3]


async def test_setting_pins_a_version_over_config(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, versions=(1, 2), digits_flat=False)
    (repo / "keywords" / "config.pbtxt").write_text("version_policy: { all { } }")
    async with serve(model_dir=repo, version_policy="keywords=1") as s:
        assert s.app.state.registry.ready_versions("keywords") == [1]
    async with serve(model_dir=repo) as s:
        assert s.app.state.registry.ready_versions("keywords") == [1, 2]
        assert (await classify(s)).json()["repository_version"] == 2  # no version asked: the highest


async def test_repository_control_needs_an_admin(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, digits_flat=False)
    async with serve(model_dir=repo) as s:  # neither admin keys nor the loopback setting: off
        off = await s.client.post("/v2/repository/models/keywords/load")
        assert off.status_code == 403 and "DIFFRES_ADMIN_KEYS" in off.json()["error"]
        assert (await s.client.post("/v2/repository/models/keywords/unload")).status_code == 403
        assert (await s.client.post("/v2/repository/index")).status_code == 200  # reading stays open
    async with serve(model_dir=repo, admin_keys=ADMIN_KEY) as s:  # API open, control needs the admin key
        assert (await s.client.post("/v2/repository/models/keywords/load")).status_code == 401
        wrong = await s.client.post("/v2/repository/models/keywords/load", headers={"X-API-Key": "nope"})
        assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
        assert (await s.client.post("/v2/repository/models/keywords/load",
                                    headers={"Authorization": f"Bearer {ADMIN_KEY}"})).status_code == 200
    async with serve(model_dir=repo, admin_keys=ADMIN_KEY, api_keys=API_KEY) as s:
        assert (await s.client.post("/v2/repository/index")).status_code == 401  # an API key is needed to read
        by_api_key = await s.client.post("/v2/repository/models/keywords/unload", headers={"X-API-Key": API_KEY})
        assert by_api_key.status_code == 403  # an API key is not an admin key
        assert (await s.client.get("/v1/models", headers={"X-API-Key": ADMIN_KEY})).status_code == 200
        assert (await s.client.post("/v2/repository/models/keywords/unload",
                                    headers={"X-API-Key": ADMIN_KEY})).status_code == 200


# ------------------------------------------------------------------ a real server and Triton's clients

@pytest.fixture(scope="module")
def live_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def live(live_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("live-log") / "server.log"
    with Server({"DIFFRES_MODEL_DIR": str(live_repo), "DIFFRES_ADMIN_LOOPBACK": "true",
                 "DIFFRES_DEFAULT_MODEL": "keywords"}, log, ready_timeout=120, grpc=True) as s:
        yield s


def next_version(repo: Path) -> int:
    return max(int(p.name) for p in (repo / "keywords").iterdir() if p.name.isdigit()) + 1


def ready_versions(server: Server, model: str = "keywords") -> list[str]:
    rows = httpx.post(f"{server.url}/v2/repository/index", json={"ready": True}, timeout=30).json()
    return [r["version"] for r in rows if r["name"] == model]


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_tritonclient_lists_loads_and_unloads(live: Server, live_repo: Path, kind: str) -> None:
    if kind == "http":
        tc = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed ('.[interop]')")
        client: Any = tc.InferenceServerClient(live.url.removeprefix("http://"), network_timeout=120)
    else:
        tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed ('.[interop]')")
        client = tc.InferenceServerClient(live.grpc_target)
    from tritonclient.utils import InferenceServerException

    def ready(name: str, version: str = "") -> bool:
        """http answers False for a model that is not ready, grpc raises (NOT_FOUND)."""
        try:
            return bool(client.is_model_ready(name, version))
        except InferenceServerException:
            return False

    def listed() -> dict[tuple[str, str], str]:
        rows = client.get_model_repository_index()
        rows = rows if kind == "http" else [{"name": m.name, "version": m.version, "state": m.state}
                                            for m in rows.models]
        return {(r["name"], r.get("version", "")): r["state"] for r in rows}

    version = next_version(live_repo)
    add_version(live_repo, "keywords", version)
    assert listed()[("keywords", str(version))] == "UNAVAILABLE"
    client.load_model("keywords")
    assert listed()[("keywords", str(version))] == "READY" and listed()[("digits", "1")] == "READY"
    assert ready("keywords", str(version)) and not ready("digits", "7") and not ready("keywords", str(version - 1))
    waveform = tone(0.5, 16000)[None]
    inputs = [tc.InferInput(c.WAVEFORM, list(waveform.shape), "FP32")]
    inputs[0].set_data_from_numpy(waveform)
    answer = client.infer("keywords", inputs, model_version=str(version))
    model_version = answer.get_response()["model_version"] if kind == "http" else answer.get_response().model_version
    assert model_version == str(version) and answer.as_numpy(c.LOGITS).shape[0] == 1
    client.unload_model("digits")
    assert listed()[("digits", "1")] == "UNAVAILABLE" and not ready("digits")
    client.load_model("digits")
    assert ready("digits")
    with pytest.raises(InferenceServerException, match="no model 'nope'"):
        client.load_model("nope")
    corrupt(live_repo, "keywords", version + 1)
    with pytest.raises(InferenceServerException, match="still serving"):
        client.load_model("keywords")
    assert ready("keywords", str(version))
    shutil.rmtree(live_repo / "keywords" / str(version + 1))
    client.load_model("keywords")
    client.close()


def test_grpc_control_needs_an_admin_key(tmp_path: Path) -> None:
    tc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed ('.[interop]')")
    from tritonclient.utils import InferenceServerException

    repo = make_repo(tmp_path, digits_flat=False)
    with Server({"DIFFRES_MODEL_DIR": str(repo), "DIFFRES_ADMIN_KEYS": ADMIN_KEY, "DIFFRES_API_KEYS": API_KEY,
                 "DIFFRES_WARMUP": "false"}, tmp_path / "server.log", grpc=True) as s:
        client = tc.InferenceServerClient(s.grpc_target)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.unload_model("keywords")
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
            client.unload_model("keywords", headers={"x-api-key": API_KEY})
        assert len(client.get_model_repository_index(headers={"x-api-key": API_KEY}).models) == 1
        client.unload_model("keywords", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        client.load_model("keywords", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert client.is_model_ready("keywords", headers={"x-api-key": API_KEY})
        client.close()


def test_a_classify_storm_loses_nothing_across_reloads(live: Server, live_repo: Path) -> None:
    """8 clients classify without pause while the model is reloaded 10 times (a new version each time):
    no error, every answer names its version, and a client never goes back to an older version."""
    stop = threading.Event()
    answers: list[list[int]] = [[] for _ in range(8)]
    errors: list[str] = []
    body = wav(1.0)

    def client(i: int) -> None:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/classify", content=body, headers=AUDIO)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        answers[i].append(r.json()["repository_version"])
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    loaded = []
    try:
        for _ in range(10):
            version = next_version(live_repo)
            add_version(live_repo, "keywords", version)
            r = httpx.post(f"{live.url}/v2/repository/models/keywords/load", timeout=120)
            assert r.status_code == 200, r.text
            loaded.append(version)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    seen = [v for per_client in answers for v in per_client]
    assert len(seen) > 50 and loaded[-1] in seen
    assert all(per_client == sorted(per_client) for per_client in answers)
    assert ready_versions(live) == [str(loaded[-1])]


def test_a_stream_finishes_on_the_version_it_started_with(live: Server, live_repo: Path) -> None:
    from websockets.sync.client import connect

    pcm = (tone(3.0, 16000) * 32767).astype("<i2").tobytes()
    with connect(f"ws://127.0.0.1:{live.port}/v1/stream?model=keywords") as ws:
        ready = json.loads(ws.recv())
        started_on = ready["repository_version"]
        ws.send(pcm[: len(pcm) // 2])
        version = next_version(live_repo)
        add_version(live_repo, "keywords", version)
        assert httpx.post(f"{live.url}/v2/repository/models/keywords/load", timeout=120).status_code == 200
        states = {r["version"]: r["state"] for r in httpx.post(f"{live.url}/v2/repository/index", timeout=30).json()
                  if r["name"] == "keywords"}
        assert states[str(started_on)] == "UNLOADING" and states[str(version)] == "READY"
        r = httpx.post(f"{live.url}/v1/classify", content=wav(1.0), headers=AUDIO, timeout=60)
        assert r.json()["repository_version"] == version  # new requests: the new version
        ws.send(pcm[len(pcm) // 2:])
        ws.send('{"type": "end"}')
        messages = [json.loads(m) for m in ws]
    assert messages[-1]["type"] == "end" and messages[-1]["duration_s"] == pytest.approx(3.0)
    deadline = time.monotonic() + 30
    while str(started_on) in [r["version"] for r in httpx.post(f"{live.url}/v2/repository/index", timeout=30).json()
                              if r["name"] == "keywords" and r["state"] == "UNLOADING"]:
        assert time.monotonic() < deadline, "the old version was never released"
        time.sleep(0.1)


def test_sighup_reloads_the_repository(live: Server, live_repo: Path) -> None:
    version = next_version(live_repo)
    add_version(live_repo, "keywords", version)
    assert live.proc is not None
    os.kill(live.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while ready_versions(live) != [str(version)]:
        assert time.monotonic() < deadline, "SIGHUP did not load the new version"
        time.sleep(0.1)
    assert live.proc.poll() is None  # a reload, not the default action of SIGHUP
    text = httpx.get(f"{live.url}/metrics", timeout=30).text
    assert metric_value(text, "diffres_model_info", model="keywords", repository_version=str(version)) == 1
    assert np.isfinite(metric_value(text, "diffres_model_load_seconds_sum", model="keywords", outcome="loaded"))


async def test_a_fresh_start_falls_back_to_the_version_before_a_broken_one(tmp_path: Path) -> None:
    """A process (a new pod, a new replica) that starts after a bad file was dropped in serves the version
    before it, and is ready, instead of serving nothing and failing its readiness forever."""
    repo = make_repo(tmp_path, digits_flat=False)
    corrupt(repo, "keywords", 2)
    async with serve(model_dir=repo) as s:
        assert (await s.client.get("/readyz")).status_code == 200
        assert (await classify(s)).json()["repository_version"] == 1
        rows = index(s)
        assert rows[("keywords", "1")]["state"] == "READY" and "load failed" in rows[("keywords", "2")]["reason"]
