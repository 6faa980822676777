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


def n_labels(served: Served) -> int:
    return len(served.app.state.registry.get("keywords").info.labels)


def direct(served: Served, x: np.ndarray, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """The graph run straight on the padded tensor, no batcher: what the endpoint must reproduce."""
    out = served.app.state.registry.get("keywords").model.run_padded(x, lengths)
    return [out[k] for k in ("logits", "importance", "frames_in", "frames_out")]


async def test_health_and_metadata(served: Served) -> None:
    c = served.client
    assert (await c.get("/v2/health/live")).status_code == 200
    assert (await c.get("/v2/health/ready")).json() == {"ready": True}
    assert (await c.get("/v2/models/keywords/ready")).json() == {"name": "keywords", "ready": True}
    meta = (await c.get("/v2/models/keywords")).json()
    assert meta["name"] == "keywords"
    assert meta["inputs"] == [{"name": "waveform", "datatype": "FP32", "shape": [-1, -1]},
                              {"name": "lengths", "datatype": "INT64", "shape": [-1]}]
    assert meta["parameters"]["optional_inputs"] == ["lengths"]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "importance", "frames_in", "frames_out", "logmel"]
    assert meta["parameters"]["sample_rate"] == 16000 and len(meta["parameters"]["labels"]) == n_labels(served)
    assert "binary_tensor_data" in (await c.get("/v2")).json()["extensions"]


async def test_json_infer_matches_onnxruntime(served: Served) -> None:
    x = np.stack([tone(0.5, 16000, freq=300), tone(0.5, 16000, freq=900)])
    r = await served.client.post("/v2/models/keywords/infer", json=tensor_request(x, id="req-7"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "keywords" and body["id"] == "req-7" and body["model_version"]
    out = {o["name"]: o for o in body["outputs"]}
    logits, importance, frames_in, frames_out = direct(served, x)
    k = n_labels(served)
    assert out["logits"]["shape"] == [2, k] and out["logits"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(out["logits"]["data"]).reshape(2, k), logits, atol=1e-4)
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
    assert logits_meta["parameters"]["binary_data_size"] == 2 * n_labels(served) * 4 and "data" not in logits_meta
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


def with_lengths(x: np.ndarray, lengths: list[int], datatype: str = "INT64", shape: list[int] | None = None) -> dict:
    req = tensor_request(x)
    req["inputs"].append({"name": "lengths", "shape": shape or [len(lengths)], "datatype": datatype, "data": lengths})
    return req


async def test_lengths_give_each_row_what_it_gives_alone(served: Served) -> None:
    rows = [tone(0.5, 16000, freq=300), tone(0.21, 16000, freq=900), tone(0.37, 16000, freq=1500)]
    x = np.zeros((3, 8000), np.float32)
    for i, row in enumerate(rows):
        x[i, :len(row)] = row
    r = await served.client.post("/v2/models/keywords/infer", json=with_lengths(x, [len(row) for row in rows]))
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    logits = np.array(out["logits"]["data"]).reshape(3, n_labels(served))
    importance = np.array(out["importance"]["data"]).reshape(out["importance"]["shape"])
    assert out["importance"]["shape"] == [3, 8000 // 160 + 1]
    for i, row in enumerate(rows):
        alone = direct(served, row[None, :])  # unpadded, no lengths: every row full length
        np.testing.assert_allclose(logits[i], alone[0][0], atol=1e-5)
        frames = int(alone[2][0])
        assert out["frames_in"]["data"][i] == frames and out["frames_out"]["data"][i] == int(alone[3][0])
        np.testing.assert_allclose(importance[i, :frames], alone[1][0], atol=1e-5)
        assert not importance[i, frames:].any()  # 0 beyond a row's frames, as the graph gives


async def test_binary_lengths_and_logmel_on_request(served: Served) -> None:
    x = np.stack([tone(0.4, 16000), tone(0.4, 16000, freq=600)]).astype("<f4")
    lengths = np.array([6400, 4000], dtype="<i8")
    header = json.dumps({
        "inputs": [{"name": "waveform", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}},
                   {"name": "lengths", "shape": [2], "datatype": "INT64",
                    "parameters": {"binary_data_size": lengths.nbytes}}],
        "outputs": [{"name": "logmel", "parameters": {"binary_data": True}}, {"name": "frames_in"}],
    }).encode()
    r = await served.client.post("/v2/models/keywords/infer", content=header + x.tobytes() + lengths.tobytes(),
                                 headers={"content-type": "application/octet-stream",
                                          "inference-header-content-length": str(len(header))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    logmel_meta, frames_meta = json.loads(r.content[:n])["outputs"]
    assert frames_meta["data"] == [6400 // 160 + 1, 4000 // 160 + 1]
    logmel = np.frombuffer(r.content[n:], dtype="<f4").reshape(logmel_meta["shape"])
    assert logmel.shape[:2] == (2, 6400 // 160 + 1)
    assert logmel[1, 26:].max() == 0 and np.abs(logmel[1, :26]).max() > 0  # row 2 has 26 frames


BAD_LENGTHS = [
    ("zero length", [3, 0], "INT64", None),
    ("longer than the row", [3, 4], "INT64", None),
    ("float lengths", [3, 3], "FP32", None),
    ("one per row", [3], "INT64", None),
    ("2-d lengths", [3, 3], "INT64", [2, 1]),
]


@pytest.mark.parametrize("name,lengths,datatype,shape", BAD_LENGTHS, ids=[b[0] for b in BAD_LENGTHS])
async def test_bad_lengths(served: Served, name: str, lengths: list[int], datatype: str,
                           shape: list[int] | None) -> None:
    x = np.zeros((2, 3), np.float32)
    r = await served.client.post("/v2/models/keywords/infer", json=with_lengths(x, lengths, datatype, shape))
    assert r.status_code == 400, r.text
    assert "lengths" in r.json()["error"]
