"""CORS and API keys (server/access.py): off by default, configured by environment, keys never logged."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest

from tests.conftest import MODEL_DIR, Served, require_model, serve, wav

pytestmark = pytest.mark.anyio
KEYS = "k-first-0123456789,k-second-abcdef"
ORIGIN = "https://recorder.example"
PROBES = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"]


@pytest.fixture(scope="module")
async def guarded() -> AsyncIterator[Served]:
    """The real models behind keys and one allowed origin."""
    require_model("keywords")
    async with serve(api_keys=KEYS, cors_origins=ORIGIN) as s:
        yield s


def test_settings_read_lists_from_the_environment_and_hide_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffres.server.config import Settings

    monkeypatch.setenv("DIFFRES_API_KEYS", " secret-one , secret-two ")
    monkeypatch.setenv("DIFFRES_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["secret-one", "secret-two"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert "secret-one" not in repr(settings) and "secret-one" not in str(settings.model_dump())


async def test_both_are_off_by_default(served: Served) -> None:
    r = await served.client.get("/v1/models", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    preflight = await served.client.options("/v1/classify", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize("path,method", [("/v1/models", "GET"), ("/v1/classify", "POST"),
                                         ("/v1/classify/batch", "POST"), ("/v2/models/keywords", "GET"),
                                         ("/v2/models/keywords/infer", "POST")])
async def test_api_routes_need_a_key(guarded: Served, path: str, method: str) -> None:
    r = await guarded.client.request(method, path, content=wav(1.0), headers={"content-type": "audio/wav"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    if path.startswith("/v2"):
        assert body["code"] == "unauthorized" and "key" in body["error"]  # the OIP error shape
    else:
        assert body == {"error": {"code": "unauthorized", "message": body["error"]["message"]}}
        assert "Authorization: Bearer" in body["error"]["message"]


async def test_a_wrong_key_is_refused_and_each_configured_key_works(guarded: Served) -> None:
    wrong = await guarded.client.get("/v1/models", headers={"Authorization": "Bearer k-first-012345678"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "the API key is not valid"
    basic = await guarded.client.get("/v1/models", headers={"Authorization": "Basic k-first-0123456789"})
    assert basic.status_code == 401
    first, second = KEYS.split(",")
    assert (await guarded.client.get("/v1/models", headers={"Authorization": f"Bearer {first}"})).status_code == 200
    assert (await guarded.client.get("/v1/models", headers={"X-API-Key": second})).status_code == 200
    r = await guarded.client.post("/v1/classify", content=wav(1.0),
                                  headers={"content-type": "audio/wav", "X-API-Key": first})
    assert r.status_code == 200 and r.json()["predictions"]


@pytest.mark.parametrize("path", PROBES + ["/"])
async def test_probes_metrics_and_the_page_stay_open(guarded: Served, path: str) -> None:
    r = await guarded.client.get(path)
    assert r.status_code == 200, r.text


async def test_metrics_can_require_a_key_too() -> None:
    async with serve(ready=False, api_keys=KEYS, metrics_require_key=True) as s:
        assert (await s.client.get("/metrics")).status_code == 401
        assert (await s.client.get("/metrics", headers={"X-API-Key": KEYS.split(",")[0]})).status_code == 200
        assert (await s.client.get("/healthz")).status_code == 200


async def test_keys_never_reach_the_logs(guarded: Served, caplog: pytest.LogCaptureFixture) -> None:
    first = KEYS.split(",")[0]
    with caplog.at_level(logging.DEBUG):
        await guarded.client.get("/v1/models", headers={"Authorization": f"Bearer {first}"})
        await guarded.client.get("/v1/models?api_key=" + first, headers={"X-API-Key": first + "x"})
        await guarded.client.post("/v1/classify", content=b"junk", headers={"X-API-Key": first,
                                                                            "content-type": "audio/wav"})
    server = [r for r in caplog.records if r.name.split(".")[0] in ("diffres", "uvicorn")]  # not httpx's
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in server)
    assert "GET /v1/models 200" in text and "GET /v1/models 401" in text  # the requests were logged
    assert first not in text


def test_the_websocket_stream_needs_a_key_too() -> None:
    """Refused at the handshake without a valid key; with one, the stream opens (its first message: ready)."""
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from diffres.server.app import create_app
    from diffres.server.config import Settings

    require_model("keywords")
    app = create_app(Settings(model_dir=MODEL_DIR, api_keys=KEYS))
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the readiness probe: the models load in the background
        for headers in ({}, {"X-API-Key": "wrong"}):
            with pytest.raises(WebSocketDisconnect) as refused:
                with client.websocket_connect("/v1/stream", headers=headers):
                    pass
            assert refused.value.code == 1008
        with client.websocket_connect("/v1/stream", headers={"Authorization": f"Bearer {KEYS.split(',')[0]}"}) as ws:
            assert ws.receive_json()["type"] == "ready"


async def test_cors_preflight_and_answers_for_the_allowed_origin(guarded: Served) -> None:
    preflight = await guarded.client.options("/v1/classify", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200  # answered before the key check: preflights carry no key
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    refused = await guarded.client.get("/v1/models", headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN  # readable
    assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()


async def test_cors_ignores_other_origins(guarded: Served) -> None:
    r = await guarded.client.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    preflight = await guarded.client.options("/v1/classify", headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
