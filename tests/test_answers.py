"""What an answer says and what the service shows about itself: detected, thresholds, precision, unknown
parameters, OpenAPI examples, metrics, the ready line and the log formats."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from diffres.server.logs import JsonFormatter, TextFormatter, request_id_var
from tests.conftest import EXAMPLES, REPO_ROOT, Served, metric_value

pytestmark = pytest.mark.anyio


async def classify(served: Served, path: Path, query: str = "") -> httpx.Response:
    return await served.client.post(f"/v1/classify{query}", files={"file": (path.name, path.read_bytes())})


async def test_detected_and_the_threshold_in_effect(served: Served) -> None:
    default = {m["name"]: m["min_score"] for m in (await served.client.get("/v1/models")).json()["models"]}
    found = (await classify(served, EXAMPLES / "alexa.flac")).json()
    assert found["detected"] is True and found["min_score"] == default["keywords"]
    assert [p["label"] for p in found["predictions"]][0] == "alexa"
    assert [p["passed"] for p in found["predictions"]] == [True] + [False] * (len(found["predictions"]) - 1)
    nothing = (await classify(served, EXAMPLES / "three.wav")).json()  # a spoken digit is no keyword
    assert nothing["detected"] is False and nothing["events"] == []
    assert not any(p["passed"] for p in nothing["predictions"])
    background = next(p for p in nothing["predictions"] if p["label"] == "_background_")
    assert background["score"] > 0.6 and background["passed"] is False  # the background label never passes


async def test_per_label_thresholds_decide_passed(served: Served) -> None:
    score = (await classify(served, EXAMPLES / "alexa.flac")).json()["predictions"][0]["score"]
    above = round(score + (1 - score) / 2, 6)  # alexa's own threshold just over its score
    answer = (await classify(served, EXAMPLES / "alexa.flac", f"?min_score=0.2&thresholds=alexa:{above}")).json()
    alexa = answer["predictions"][0]
    assert alexa["label"] == "alexa" and alexa["passed"] is False and answer["min_score"] == 0.2
    assert answer["detected"] is False


async def test_segments_can_be_left_out(served: Served) -> None:
    full = (await classify(served, EXAMPLES / "long.flac")).json()
    lean = (await classify(served, EXAMPLES / "long.flac", "?include_segments=false")).json()
    assert len(full["segments"]) == full["windowing"]["windows"] and "segments" not in lean
    assert lean["events"] == full["events"] and lean["windowing"] == full["windowing"]


def decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


async def test_floats_have_the_documented_precision(served: Served) -> None:
    answer = (await classify(served, EXAMPLES / "long.flac", "?include_importance=true")).json()
    scores = [p["score"] for p in answer["predictions"]] + [e["score"] for e in answer["events"]] + \
        [p["score"] for s in answer["segments"] for p in s["predictions"]]
    assert max(map(decimals, scores)) <= 6
    bounds = [e[k] for e in answer["events"] for k in ("start_s", "end_s")] + \
        [s[k] for s in answer["segments"] for k in ("start_s", "end_s")]
    assert max(map(decimals, bounds)) <= 3
    assert decimals(answer["frames"]["reduction"]) <= 4 and decimals(answer["duration_s"]) <= 6
    assert max(map(decimals, answer["importance"])) <= 5
    clip = (await classify(served, EXAMPLES / "alexa.flac", "?include_spectrogram=true")).json()["spectrogram"]
    assert max(decimals(v) for row in clip["logmel"] for v in row) <= 2


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/classify?topk=1"), ("GET", "/v1/models?verbose=1"),
                                              ("GET", "/readyz?x=1"), ("POST", "/v2/models/keywords/infer?binary=1"),
                                              ("POST", "/v1/classify/batch?top_k=2&minscore=0.3")])
async def test_unknown_query_parameters_are_422_naming_them(served: Served, method: str, path: str) -> None:
    r = await served.client.request(method, path, files={"file": ("a.flac", b"x")} if "classify" in path else None)
    assert r.status_code == 422, r.text
    unknown = path.split("?")[1].split("&")[-1].split("=")[0]
    body = r.json()
    message = body["error"] if path.startswith("/v2") else body["error"]["message"]
    assert f"'{unknown}'" in message


async def test_openapi_has_a_real_example_and_describes_the_parameters(served: Served) -> None:
    spec = (await served.client.get("/openapi.json")).json()
    classify_op = spec["paths"]["/v1/classify"]["post"]
    example = classify_op["responses"]["200"]["content"]["application/json"]["example"]
    assert example["events"][0]["label"] == "alexa" and "detected" in example
    described = {p["name"]: p.get("description", "") for p in classify_op["parameters"]}
    assert {"top_k", "min_score", "include_segments", "thresholds"} <= set(described)
    assert all(described.values())
    assert "best window" in json.dumps(spec["components"]["schemas"]["Prediction"])
    assert {"400", "401", "404", "413", "415", "422", "503"} <= set(classify_op["responses"])
    assert any("examples/alexa.flac" in sample["source"] for sample in classify_op["x-codeSamples"])


async def test_docs_pages_use_local_assets(served: Served) -> None:
    for page, asset in (("/docs", "/docs-assets/swagger-ui-bundle.js"), ("/redoc", "/docs-assets/redoc.standalone.js")):
        html = (await served.client.get(page)).text
        assert asset in html and "cdn." not in html and "fonts.googleapis" not in html
        assert (await served.client.get(asset)).status_code == 200


async def test_metrics_people_expect(served: Served) -> None:
    found = {e["label"] for e in (await classify(served, EXAMPLES / "long.flac")).json()["events"]}
    for path in ("/", "/static/app.js", "/docs"):
        await served.client.get(path, headers={"accept": "text/html"})
    text = (await served.client.get("/metrics")).text
    assert "_created" not in text
    assert metric_value(text, "diffres_http_requests_total", route="/static/{file}") >= 1
    assert metric_value(text, "diffres_http_requests_total", route="/docs") >= 1
    assert metric_value(text, "diffres_http_requests_total", route="unmatched") == 0
    assert metric_value(text, "process_resident_memory_bytes") > 0 and metric_value(text, "process_open_fds") > 0
    version = json.loads((await served.client.get("/v1/models")).text)["models"][1]["version"]
    assert metric_value(text, "diffres_model_info", model="keywords", version=version, delta="0.5") == 1
    assert found and all(metric_value(text, "diffres_events_total", model="keywords", label=label) >= 1
                         for label in found)


def test_log_formats_for_people_and_machines() -> None:
    record = logging.LogRecord("diffres.server.access", logging.INFO, __file__, 1, "GET /v1/models 200", None, None)
    record.fields = {"duration_ms": 12.34, "status": 200}
    token = request_id_var.set("abcdef0123456789")
    try:
        text, data = TextFormatter().format(record), json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO  GET /v1/models 200 \(12\.3 ms\) \[abcdef01\]", text)
    assert data["message"] == "GET /v1/models 200" and data["request_id"] == "abcdef0123456789"


async def test_the_grafana_dashboard_reads_series_the_service_serves(served: Served) -> None:
    """Every metric a panel of deploy/grafana/diffres-dashboard.json queries is one /metrics exposes."""
    from prometheus_client.parser import text_string_to_metric_families

    await classify(served, EXAMPLES / "long.flac")
    served_names = {f.name for f in text_string_to_metric_families((await served.client.get("/metrics")).text)}
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "diffres-dashboard.json").read_text())
    queried = {re.sub(r"_(bucket|sum|count|total)$", "", name) for panel in dashboard["panels"]
               for target in panel["targets"] for name in re.findall(r"\b(?:diffres|process)_[a-z_]+", target["expr"])}
    assert queried and queried <= {re.sub(r"_total$", "", n) for n in served_names}, queried - served_names
