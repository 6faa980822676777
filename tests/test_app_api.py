"""/v1 API in-process (httpx over ASGI) with the shipped keywords model: formats, parameters,
long-audio windowing, batch endpoint, probes, metrics, request ids, readiness and overload."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soxr

from diffres.schemas import SCORE_DECIMALS
from diffres.server.loaded import LoadedModel
from tests.conftest import (
    MODEL_DIR,
    Served,
    encode,
    metric_value,
    require_model,
    serve,
    tone,
    wav,
)

pytestmark = pytest.mark.anyio


async def test_classify_multipart_response_contract(served: Served) -> None:
    r = await served.client.post("/v1/classify", files={"file": ("a.wav", wav(2.0), "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    for key in ("model", "model_version", "duration_s", "sample_rate", "predictions", "frames", "timing_ms"):
        assert key in body
    assert body["model"] == "keywords" and body["sample_rate"] == 16000 and body["duration_s"] == 2.0
    scores = [p["score"] for p in body["predictions"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    frames = body["frames"]
    assert frames["input"] == 32000 // 160 + 1
    assert frames["reduction"] == round(1 - frames["output"] / frames["input"], 4)  # 4 decimals
    assert set(body["timing_ms"]) >= {"decode", "inference", "total"}
    assert "segments" not in body and "importance" not in body


async def test_raw_body_equals_multipart_and_parameters_apply(served: Served) -> None:
    data = wav(1.5)
    a = (await served.client.post("/v1/classify?top_k=2", content=data, headers={"content-type": "audio/wav"})).json()
    b = (await served.client.post("/v1/classify", files={"file": ("x.wav", data)}, data={"top_k": "2"})).json()
    c = (await served.client.post("/v1/classify?top_k=100", content=data,
                                  headers={"content-type": "application/octet-stream"})).json()
    assert len(a["predictions"]) == len(b["predictions"]) == 2
    assert a["predictions"] == b["predictions"]
    labels = served.app.state.registry.get("keywords").info.labels
    rounding = len(labels) * 0.5 * 10.0 ** -SCORE_DECIMALS  # each score is rounded on its own
    assert len(c["predictions"]) == len(labels)
    assert sum(p["score"] for p in c["predictions"]) == pytest.approx(1.0, abs=rounding + 1e-9)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
                                         ("WAV", "PCM_U8"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                         ("MP3", "MPEG_LAYER_III")])
async def test_formats_decode_to_the_same_answer(served: Served, fmt: str, subtype: str) -> None:
    x = tone(1.2, 16000)
    ref = (await served.client.post("/v1/classify?top_k=6", content=encode(x, 16000, "WAV", "FLOAT"),
                                    headers={"content-type": "audio/wav"})).json()
    r = await served.client.post("/v1/classify?top_k=6", content=encode(x, 16000, fmt, subtype),
                                 headers={"content-type": "audio/*"})
    assert r.status_code == 200, r.text
    got = {p["label"]: p["score"] for p in r.json()["predictions"]}
    want = {p["label"]: p["score"] for p in ref["predictions"]}
    lossy = fmt in ("OGG", "MP3") or subtype == "PCM_U8"
    assert max(abs(got[k] - want[k]) for k in want) < (0.25 if lossy else 0.02)


async def test_resampling_and_mixdown(served: Served) -> None:
    """A 44.1 kHz stereo upload of the same sound answers like the 16 kHz mono original."""
    x = tone(1.5, 16000)
    up = soxr.resample(x, 16000, 44100)
    stereo = np.stack([1.5 * up, 0.5 * up], axis=1)  # mixes down to `up`
    mono = (await served.client.post("/v1/classify?top_k=6", content=encode(x, 16000, subtype="FLOAT"),
                                     headers={"content-type": "audio/wav"})).json()
    r = await served.client.post("/v1/classify?top_k=6", content=encode(stereo, 44100, subtype="FLOAT"),
                                 headers={"content-type": "audio/wav"})
    body = r.json()
    assert r.status_code == 200 and body["sample_rate"] == 44100 and body["channels"] == 2
    assert body["frames"]["input"] == mono["frames"]["input"]
    want = {p["label"]: p["score"] for p in mono["predictions"]}
    assert all(abs(p["score"] - want[p["label"]]) < 0.05 for p in body["predictions"])


async def test_importance_has_one_value_per_frame_and_sums_to_frames_out(served: Served) -> None:
    body = (await served.client.post("/v1/classify?include_importance=true", content=wav(2.0),
                                     headers={"content-type": "audio/wav"})).json()
    assert len(body["importance"]) == body["frames"]["input"]
    assert sum(body["importance"]) == pytest.approx(body["frames"]["output"], abs=0.01)
    assert body["importance_hop_s"] == pytest.approx(0.01)


async def test_long_audio_is_windowed_and_clip_level_is_the_best_window(served: Served) -> None:
    seconds = 20.0
    r = await served.client.post("/v1/classify?top_k=10&include_importance=true", content=wav(seconds),
                                 headers={"content-type": "audio/wav"})
    assert r.status_code == 200, r.text
    body = r.json()
    win, hop = body["windowing"]["window_s"], body["windowing"]["hop_s"]
    segments = body["segments"]
    models = (await served.client.get("/v1/models")).json()["models"]
    info = next(m for m in models if m["name"] == body["model"])
    assert win == pytest.approx(info["window_s"]) and hop == pytest.approx(info["window_hop_s"])
    assert len(segments) == body["windowing"]["windows"] == math.ceil((seconds - win) / hop - 1e-9) + 1  # the last one ends at the end
    assert segments[0]["start_s"] == 0 and segments[-1]["end_s"] == pytest.approx(seconds)
    assert all(s2["start_s"] < s1["end_s"] for s1, s2 in pairwise(segments))  # overlapping, no gaps
    assert body["windowing"]["aggregation"] == "max_probability"
    background = info["background_label"]
    for label in body["predictions"]:  # what was detected: the best window, not a mean diluted by background
        scores = [next(p["score"] for p in s["predictions"] if p["label"] == label["label"]) for s in segments]
        # "nothing here" holds for the whole clip only as far as its least background-like window
        expected = min(scores) if label["label"] == background else max(scores)
        assert label["score"] == pytest.approx(expected, abs=1e-9)
    assert body["frames"]["input"] == sum(s["frames"]["input"] for s in segments)
    assert body["frames"]["output"] == sum(s["frames"]["output"] for s in segments)
    assert len(body["importance"]) == int(seconds * 16000) // 160 + 1


async def test_short_audio_below_threshold_is_one_inference(served: Served) -> None:
    models = (await served.client.get("/v1/models")).json()["models"]
    seconds = float(int(next(m["long_audio_s"] for m in models if m["name"] == "keywords")))  # just below it
    body = (await served.client.post("/v1/classify", content=wav(seconds),
                                     headers={"content-type": "audio/wav"})).json()
    assert "segments" not in body and body["frames"]["input"] == int(seconds * 100) + 1


async def test_batch_endpoint_keeps_order_and_isolates_bad_files(served: Served) -> None:
    files = [("file", ("a.wav", wav(1.0), "audio/wav")), ("file", ("bad.wav", b"not audio at all", "audio/wav")),
             ("file", ("c.flac", encode(tone(1.0, 8000), 8000, "FLAC"), "audio/flac")),
             ("file", ("empty.wav", b"", "audio/wav")), ("file", ("long.wav", wav(12.0), "audio/wav"))]
    r = await served.client.post("/v1/classify/batch?top_k=3", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3, 4]
    assert [x["filename"] for x in results] == ["a.wav", "bad.wav", "c.flac", "empty.wav", "long.wav"]
    assert [x["status"] for x in results] == [200, 400, 200, 400, 200]
    assert results[1]["error"]["code"] == "invalid_audio" and results[3]["error"]["code"] == "empty_audio"
    assert results[2]["result"]["sample_rate"] == 8000 and "segments" in results[4]["result"]
    assert all(len(x["result"]["predictions"]) == 3 for x in results if x["status"] == 200)


async def test_batch_endpoint_needs_multipart_files(served: Served) -> None:
    r = await served.client.post("/v1/classify/batch", content=wav(1.0), headers={"content-type": "audio/wav"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = await served.client.post("/v1/classify/batch", files={"other": ("a.wav", wav(1.0))})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameters"


async def test_models_probes_and_docs(served: Served) -> None:
    models = (await served.client.get("/v1/models")).json()
    kw = next(m for m in models["models"] if m["name"] == "keywords")
    assert kw["labels"][:6] == ["alexa", "computer", "jarvis", "smart_mirror", "snowboy", "view_glass"]
    assert kw["sample_rate"] == 16000 and kw["delta"] == 0.5 and kw["version"] and kw["default"]
    assert (await served.client.get("/healthz")).json() == {"status": "ok"}
    ready = await served.client.get("/readyz")
    assert ready.status_code == 200 and "keywords" in ready.json()["models"]
    assert (await served.client.get("/docs")).status_code == 200
    spec = (await served.client.get("/openapi.json")).json()
    assert {"/v1/classify", "/v1/classify/batch", "/v2/models/{model_name}/infer"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]


async def test_metrics_count_requests_frames_and_audio(served: Served) -> None:
    before = (await served.client.get("/metrics")).text
    body = (await served.client.post("/v1/classify", content=wav(2.0), headers={"content-type": "audio/wav"})).json()
    await served.client.post("/v1/classify?top_k=0", content=wav(1.0), headers={"content-type": "audio/wav"})
    after = (await served.client.get("/metrics")).text

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("diffres_http_requests_total", route="/v1/classify", status="200") == 1
    assert delta("diffres_http_requests_total", route="/v1/classify", status="422") == 1
    assert delta("diffres_http_request_duration_seconds_count", route="/v1/classify") == 2
    assert delta("diffres_frames_in_total", model="keywords") == body["frames"]["input"]
    assert delta("diffres_frames_out_total", model="keywords") == body["frames"]["output"]
    assert delta("diffres_audio_seconds_total", model="keywords") == pytest.approx(2.0)
    assert delta("diffres_batch_size_count", model="keywords") >= 1
    assert delta("diffres_queue_wait_seconds_count", model="keywords") >= 1


async def test_request_id_is_echoed_generated_and_logged(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="diffres.server.access"):
        r = await served.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        generated = (await served.client.get("/healthz")).headers["x-request-id"]
        unsafe = (await served.client.get("/healthz", headers={"X-Request-ID": "a b\"c"})).headers["x-request-id"]
    assert r.headers["x-request-id"] == "abc-123"
    assert len(generated) == 32 and unsafe != 'a b"c'
    from diffres.server.logs import JsonFormatter
    lines = [json.loads(JsonFormatter().format(rec)) for rec in caplog.records if rec.name == "diffres.server.access"]
    assert {"request_id": "abc-123", "status": 200, "path": "/healthz"}.items() <= lines[0].items()
    assert lines[1]["request_id"] == generated


async def test_overloaded_queue_answers_503_with_retry_after_at_once(served: Served) -> None:
    model = served.app.state.registry.get("keywords")
    before = metric_value((await served.client.get("/metrics")).text, "diffres_rejected_total", model="keywords")
    with ExitStack() as held:
        while model.batcher.reserved < model.batcher.queue_limit:  # take every slot
            held.enter_context(model.batcher.lease(model.batcher.queue_limit - model.batcher.reserved))
        r = await asyncio.wait_for(served.client.post("/v1/classify", content=wav(1.0),
                                                      headers={"content-type": "audio/wav"}), 5)
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
    assert int(r.headers["retry-after"]) >= 0
    after = metric_value((await served.client.get("/metrics")).text, "diffres_rejected_total", model="keywords")
    assert after == before + 1
    ok = await served.client.post("/v1/classify", content=wav(1.0), headers={"content-type": "audio/wav"})
    assert ok.status_code == 200  # slots released: serving again


async def test_not_ready_until_warm_up_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    require_model("keywords")
    gate = threading.Event()
    original = LoadedModel.warm_up

    def slow_warm_up(self: LoadedModel) -> None:
        assert gate.wait(60)
        original(self)

    monkeypatch.setattr(LoadedModel, "warm_up", slow_warm_up)
    async with serve(ready=False) as s:
        not_ready = await s.client.get("/readyz")
        classify = await s.client.post("/v1/classify", content=wav(1.0), headers={"content-type": "audio/wav"})
        health = await s.client.get("/healthz")
        v2 = await s.client.get("/v2/health/ready")
        gate.set()
        assert await s.app.state.registry.wait_ready(60)
        ready = await s.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "not_ready"
    assert classify.status_code == 503 and health.status_code == 200 and v2.status_code == 503
    assert ready.status_code == 200


async def test_broken_model_file_is_reported_not_fatal(tmp_path: Path) -> None:
    require_model("keywords")
    (tmp_path / "keywords.onnx").symlink_to(MODEL_DIR / "keywords.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"this is no onnx model")
    async with serve(model_dir=tmp_path) as s:
        ready = await s.client.get("/readyz")
        v2_ready = await s.client.get("/v2/health/ready")
        missing = await s.client.post("/v1/classify?model=broken", content=wav(1.0),
                                      headers={"content-type": "audio/wav"})
        good = await s.client.post("/v1/classify", content=wav(1.0), headers={"content-type": "audio/wav"})
    error = ready.json()["error"]
    assert ready.status_code == 503 and error["code"] == "degraded" and ready.headers["retry-after"]
    assert "broken" in error["message"] and "keywords" in error["message"]
    assert str(tmp_path) not in ready.text and "/" not in error["message"]  # no paths in what probes say
    assert v2_ready.status_code == 503 and missing.status_code == 404 and good.status_code == 200


async def test_empty_model_dir_is_never_ready(tmp_path: Path) -> None:
    async with serve(model_dir=tmp_path, ready=False) as s:
        await asyncio.wait_for(_until_loaded(s), 30)
        r = await s.client.get("/readyz")
        assert r.status_code == 503 and "no model" in r.json()["error"]["message"]
        assert (await s.client.get("/v1/models")).status_code == 503


async def _until_loaded(s: Served) -> None:
    while s.app.state.registry.status == "loading":
        await asyncio.sleep(0.01)


async def test_window_settings_apply_and_hop_snaps_to_the_frame_grid() -> None:
    require_model("keywords")
    async with serve(window_s=1.0, window_hop_s=0.333, long_audio_s=2.0) as s:
        short = (await s.client.post("/v1/classify", content=wav(2.0), headers={"content-type": "audio/wav"})).json()
        body = (await s.client.post("/v1/classify", content=wav(5.0), headers={"content-type": "audio/wav"})).json()
        models = (await s.client.get("/v1/models")).json()["models"]
    assert "segments" not in short  # exactly the threshold: still one inference
    assert body["windowing"]["window_s"] == 1.0 and body["windowing"]["hop_s"] == pytest.approx(0.33)
    starts = [seg["start_s"] for seg in body["segments"]]
    assert starts[:3] == pytest.approx([0.0, 0.33, 0.66]) and body["segments"][-1]["end_s"] == 5.0
    assert next(m for m in models if m["name"] == "keywords")["long_audio_s"] == 2.0


async def test_too_many_files_in_one_batch(served: Served) -> None:
    limit = served.app.state.settings.max_batch_files
    files = [("file", (f"{i}.wav", b"x", "audio/wav")) for i in range(limit + 1)]
    r = await served.client.post("/v1/classify/batch", files=files)
    assert r.status_code == 422 and str(limit) in r.json()["error"]["message"]


async def test_absurd_float_values_are_refused_not_fed_to_the_model(served: Served) -> None:
    x = tone(1.0, 16000) * 1e25  # finite in float32, but overflows the model's spectrum
    r = await served.client.post("/v1/classify", content=encode(x, 16000, subtype="FLOAT"),
                                 headers={"content-type": "audio/wav"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "out_of_range_audio"
    v2 = await served.client.post("/v2/models/keywords/infer", json={"inputs": [
        {"name": "waveform", "shape": [1, 800], "datatype": "FP32", "data": [1e30] * 800}]})
    assert v2.status_code == 400 and v2.json()["code"] == "out_of_range_audio"
