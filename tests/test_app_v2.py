"""Open Inference Protocol v2 routes, JSON and binary tensor data, against a direct onnxruntime run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import Served, tone

pytestmark = pytest.mark.anyio


def tensor_request(x: np.ndarray, **extra: object) -> dict:
    return {"inputs": [{"name": "waveform", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **extra}


def direct(served: Served, x: np.ndarray) -> list[np.ndarray]:
    session = served.app.state.registry.get("keywords").session
    return session.run(["logits", "importance", "frames_in", "frames_out"], {"waveform": x})


async def test_health_and_metadata(served: Served) -> None:
    c = served.client
    assert (await c.get("/v2/health/live")).status_code == 200
    assert (await c.get("/v2/health/ready")).json() == {"ready": True}
    assert (await c.get("/v2/models/keywords/ready")).json() == {"name": "keywords", "ready": True}
    meta = (await c.get("/v2/models/keywords")).json()
    assert meta["name"] == "keywords"
    assert meta["inputs"] == [{"name": "waveform", "datatype": "FP32", "shape": [-1, -1]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "importance", "frames_in", "frames_out"]
    assert meta["parameters"]["sample_rate"] == 16000 and len(meta["parameters"]["labels"]) == 6
    assert "binary_tensor_data" in (await c.get("/v2")).json()["extensions"]


async def test_json_infer_matches_onnxruntime(served: Served) -> None:
    x = np.stack([tone(0.5, 16000, freq=300), tone(0.5, 16000, freq=900)])
    r = await served.client.post("/v2/models/keywords/infer", json=tensor_request(x, id="req-7"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "keywords" and body["id"] == "req-7" and body["model_version"]
    out = {o["name"]: o for o in body["outputs"]}
    logits, importance, frames_in, frames_out = direct(served, x)
    assert out["logits"]["shape"] == [2, 6] and out["logits"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(out["logits"]["data"]).reshape(2, 6), logits, atol=1e-4)
    assert out["importance"]["shape"] == [2, 8000 // 160 + 1]
    np.testing.assert_allclose(np.array(out["importance"]["data"]).reshape(importance.shape), importance, atol=1e-4)
    assert out["frames_in"] == {"name": "frames_in", "datatype": "INT64", "shape": [2], "data": frames_in.tolist()}
    assert out["frames_out"]["data"] == frames_out.tolist()


async def test_nested_data_and_output_selection(served: Served) -> None:
    x = tone(0.3, 16000)[None, :]
    req = tensor_request(x, outputs=[{"name": "frames_out"}])
    req["inputs"][0]["data"] = x.tolist()  # nested rows are accepted too
    body = (await served.client.post("/v2/models/keywords/infer", json=req)).json()
    assert [o["name"] for o in body["outputs"]] == ["frames_out"]


async def test_binary_tensor_extension_round_trip(served: Served) -> None:
    """What tritonclient sends by default: JSON header, then raw little-endian tensors."""
    x = np.stack([tone(0.4, 16000), tone(0.4, 16000, freq=600)]).astype("<f4")
    header = json.dumps({
        "inputs": [{"name": "waveform", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}, {"name": "frames_in"}],
    }).encode()
    r = await served.client.post("/v2/models/keywords/infer", content=header + x.tobytes(), headers={
        "content-type": "application/octet-stream", "inference-header-content-length": str(len(header))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    logits_meta, frames_meta = meta["outputs"]
    assert logits_meta["parameters"]["binary_data_size"] == 2 * 6 * 4 and "data" not in logits_meta
    logits = np.frombuffer(r.content[n:], dtype="<f4").reshape(logits_meta["shape"])
    np.testing.assert_allclose(logits, direct(served, x)[0], atol=1e-4)
    assert frames_meta["data"] == [0.4 * 16000 // 160 + 1] * 2


def waveform(shape: list[int], data: list | None, datatype: str = "FP32", name: str = "waveform") -> dict:
    tensor = {"name": name, "shape": shape, "datatype": datatype}
    return {"inputs": [tensor if data is None else {**tensor, "data": data}]}


BAD = [
    ("unknown model", "/v2/models/nope/infer", {"inputs": []}, 404),
    ("wrong datatype", None, waveform([1, 3], [1, 2, 3], datatype="INT16"), 400),
    ("wrong input name", None, waveform([1, 3], [0, 0, 0], name="audio"), 400),
    ("shape mismatch", None, waveform([2, 3], [0, 0, 0]), 400),
    ("1-d shape", None, waveform([3], [0, 0, 0]), 400),
    ("zero samples", None, waveform([1, 0], []), 400),
    ("strings as data", None, waveform([1, 2], ["a", "b"]), 400),
    ("no data", None, waveform([1, 2], None), 400),
    ("unknown output", None, {**waveform([1, 2], [0, 0]), "outputs": [{"name": "embedding"}]}, 400),
    ("not a request", None, {"hello": "world"}, 400),
]


@pytest.mark.parametrize("name,url,payload,status", BAD, ids=[b[0] for b in BAD])
async def test_bad_infer_requests(served: Served, name: str, url: str | None, payload: dict, status: int) -> None:
    r = await served.client.post(url or "/v2/models/keywords/infer", json=payload)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]  # OIP error shape


async def test_non_finite_and_malformed_bodies(served: Served) -> None:
    url = "/v2/models/keywords/infer"
    nan = b'{"inputs": [{"name": "waveform", "shape": [1, 2], "datatype": "FP32", "data": [NaN, 0]}]}'
    r = await served.client.post(url, content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "non_finite_audio"
    r = await served.client.post(url, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = await served.client.post(url, content=b"{}", headers={"content-type": "application/json",
                                                              "inference-header-content-length": "99"})
    assert r.status_code == 400
    r = await served.client.post(url, files={"file": ("a.wav", b"x")})
    assert r.status_code == 415
    big = b" " * (served.app.state.settings.max_json_bytes + 1)
    r = await served.client.post(url, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "DIFFRES_MAX_JSON_BYTES" in r.json()["error"]
    assert (await served.client.get("/healthz")).status_code == 200
