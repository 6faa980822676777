"""Issue 23, less work per request: what the changes keep (answers, errors, semantics) and how they behave.

The figures (CPU per request, efficiency, throughput) are the load test's (`make loadtest`, reports/LOADTEST.md,
docs/performance.md); these tests hold the mechanisms: one worker-thread hop for a clip, the pipeline driven
step by step, uploads decoded from memory, worker processes' settings, the load test's accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import io
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import Any

import pytest

from tests.conftest import EXAMPLES, Served, require_model, without_timing


# ---------------------------------------------------------------- the pipeline, driven step by step


def test_classification_driven_by_hand_is_pipeline_classify() -> None:
    """Pipeline.start (what the service drives from its event loop) answers exactly as Pipeline.classify."""
    require_model("keywords")
    from diffres.api import Classifier
    from diffres.pipeline import OUTPUTS, ClassifyOptions
    from diffres.runner import SessionRunner

    clf = Classifier.load("keywords", threads=1)
    pipeline, runner = clf.pipeline, SessionRunner(clf.model, slots=4)
    for name in ("alexa.flac", "long.flac", "three.wav"):
        options = ClassifyOptions(include_importance=True, top_k=3)
        want = pipeline.classify(pipeline.open(str(EXAMPLES / name)), runner, options)
        run = pipeline.start(pipeline.open(str(EXAMPLES / name)), options, slots=4)
        while rows := run.rows():
            run.add(runner(rows, OUTPUTS))
        assert run.decoded
        assert without_timing(run.result()) == without_timing(want), name


def test_classification_closes_its_decoder_once() -> None:
    require_model("keywords")
    from diffres.api import Classifier
    from diffres.pipeline import ClassifyOptions

    pipeline = Classifier.load("keywords", threads=1).pipeline
    opened = pipeline.open(str(EXAMPLES / "alexa.flac"))
    closed = []
    real_close = opened.decoder.close
    opened.decoder.close = lambda: (closed.append(1), real_close())  # type: ignore[method-assign]
    run = pipeline.start(opened, ClassifyOptions(), slots=1)
    assert len(run.rows()) == 1 and run.decoded  # a clip: decoded whole in one step
    run.close()
    run.close()
    assert closed == [1]


# ---------------------------------------------------------------- the service's hops



@pytest.mark.anyio
async def test_no_worker_thread_hop_for_a_small_clip_one_for_a_larger_one_more_for_long_audio(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    import diffres.server.loaded as loaded

    hops: list[str] = []
    real = loaded.run_to_completion

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", str(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(loaded, "run_to_completion", counting)
    clip = (EXAMPLES / "alexa.flac").read_bytes()
    r = await served.client.post("/v1/classify", files={"file": ("a.flac", clip)})
    assert r.status_code == 200 and hops == []  # small and in memory: decoded on the event loop
    monkeypatch.setattr(loaded, "INLINE_BYTES", len(clip) - 1)
    again = await served.client.post("/v1/classify", files={"file": ("a.flac", clip)})
    assert without_timing(again.json()) == without_timing(r.json()) and hops == ["_start"]  # larger: one hop
    hops.clear()
    r = await served.client.post("/v1/classify", content=(EXAMPLES / "long.flac").read_bytes(),
                                 headers={"content-type": "audio/flac"})
    assert r.status_code == 200 and r.json()["windowing"]["windows"] > 1
    assert hops == ["_start", "classify"]  # open in a thread, then windows decoded and classified in a thread


@pytest.mark.anyio
async def test_worker_threads_see_the_request_context() -> None:
    from diffres.server.threads import pool, run_to_completion

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("request-1")
    seen = await run_to_completion(lambda: (var.get(), __import__("threading").current_thread().name))
    assert seen[0] == "request-1" and seen[1].startswith("diffres-work")
    assert pool() is pool()


@pytest.mark.anyio
async def test_a_cancelled_request_waits_for_its_thread() -> None:
    import threading

    from diffres.server.threads import run_to_completion

    release, finished, cancelled = threading.Event(), threading.Event(), []

    def work() -> None:
        release.wait(5)
        finished.set()

    task = asyncio.ensure_future(run_to_completion(work, on_cancel=lambda: (cancelled.append(1), release.set())))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [1] and finished.is_set()


# ---------------------------------------------------------------- uploads in memory


def test_small_uploads_are_decoded_from_memory_large_ones_from_their_file() -> None:
    from diffres.server.uploads import Upload

    small = SpooledTemporaryFile(max_size=1024)
    small.write(b"x" * 100)
    upload = Upload.of(small, "a.wav", 100)
    assert isinstance(upload.file, io.BytesIO) and upload.file.tell() == 0 and upload.spool is small
    upload.close()
    assert small.closed and upload.file.closed

    large = SpooledTemporaryFile(max_size=10)
    large.write(b"x" * 100)  # rolled over to a real file
    upload = Upload.of(large, None, 100)
    assert upload.file is large and upload.spool is None
    upload.close()
    assert large.closed


@pytest.mark.anyio
async def test_a_large_upload_still_spools_to_disk_and_classifies(served: Served) -> None:
    """Past the in-memory size (1 MiB) the body goes to a temporary file, and libsndfile reads its descriptor."""
    import numpy as np

    from tests.conftest import encode, tone

    data = encode(np.concatenate([tone(9.0, 16000)] * 2), 16000, "WAV", "FLOAT")  # 18 s of float WAV: over 1 MiB
    assert len(data) > 1024 * 1024
    r = await served.client.post("/v1/classify", files={"file": ("big.wav", data, "audio/wav")})
    assert r.status_code == 200 and r.json()["duration_s"] == pytest.approx(18.0)


# ---------------------------------------------------------------- metrics


def test_metric_children_are_remembered() -> None:
    from diffres.server.metrics import Metrics

    m = Metrics()
    assert m.child(m.requests, "/r", "GET", "200") is m.child(m.requests, "/r", "GET", "200")
    m.child(m.requests, "/r", "GET", "200").inc()
    assert m.requests.labels("/r", "GET", "200")._value.get() == 1.0
    text = m.render()[0].decode()
    assert "diffres_inference_cpu_seconds_total" in text


# ---------------------------------------------------------------- worker processes


def test_workers_refuse_a_grpc_port_and_carry_settings_through_the_environment(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    from pydantic import ValidationError

    from diffres.server.config import Settings, environment

    with pytest.raises(ValidationError, match="DIFFRES_WORKERS=1"):
        Settings(workers=2, grpc_port=8001)
    given = Settings(workers=3, model_dir=Path("/models"), providers=["CPUExecutionProvider"], api_keys=["k1", "k2"],
                     warmup=False, grpc_port=None, port=9000)
    env = environment(given)
    assert env["DIFFRES_WORKERS"] == "3" and env["DIFFRES_API_KEYS"] == "k1,k2" and env["DIFFRES_WARMUP"] == "false"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    again = Settings()
    for name in given.model_fields_set:
        assert getattr(again, name) == getattr(given, name), name


def test_cli_takes_workers() -> None:
    from diffres.cli import parser

    args = parser().parse_args(["serve", "--workers", "2", "--port", "9000"])
    assert args.workers == 2 and args.port == 9000


def test_worker_processes_import_the_guarded_protocol_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from uvicorn.importer import import_from_string
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from diffres.server.config import get_settings

    monkeypatch.setenv("DIFFRES_MAX_CONNECTIONS", "7")
    get_settings.cache_clear()
    try:
        protocol = import_from_string("diffres.server.http_guard:from_environment")
        assert issubclass(protocol, HttpToolsProtocol)
    finally:
        get_settings.cache_clear()


@pytest.mark.anyio
async def test_with_worker_processes_the_repository_api_is_refused() -> None:
    require_model("keywords")
    from tests.conftest import serve

    async with serve(workers=2, admin_loopback=True) as s:
        r = await s.client.post("/v2/repository/models/keywords/load")
        assert r.status_code == 403 and "worker process" in r.text


# ---------------------------------------------------------------- the load test's accounting


def test_profile_summary_shares_and_owners() -> None:
    from tools.loadtest.profile import markdown, summarise

    raw = "\n".join([
        "main (diffres/__main__.py:1);run (onnxruntime/capi/onnxruntime_inference_collection.py:200) 60",
        "main (diffres/__main__.py:1);receive_body (diffres/server/uploads.py:130);parse (python_multipart/m.py:9) 10",
        "main (diffres/__main__.py:1);AudioStream.read (diffres/decode.py:249);read (soundfile.py:90) 20",
        "main (diffres/__main__.py:1);record_access (diffres/server/middleware.py:200);emit (logging/__init__.py:1) 10",
    ])
    s = summarise(raw)
    assert s["samples"] == 100
    owners = dict(s["by_owner"])
    assert owners["onnxruntime"] == 0.6 and owners["soundfile (libsndfile)"] == 0.2 and owners["logging"] == 0.1
    stages = dict(s["stages"])
    assert stages["session call (onnxruntime)"] == 0.6 and stages["receive body (multipart / raw)"] == 0.1
    assert stages["decode + resample (AudioStream.read)"] == 0.2 and stages["access log"] == 0.1
    assert any("onnxruntime" in line for line in markdown(s))


def test_report_has_work_per_request_and_the_goals(tmp_path: Path) -> None:
    from tools.loadtest.report import write_reports

    args = argparse.Namespace(users=16, spawn_rate=16, run_time=60, rounds=1, model="keywords", long_fraction=0.1,
                              raw=False, inproc_seconds=40, seed=0, goal=0.85, out=tmp_path)
    lat = {"p50": 1.0, "p95": 2.0, "p99": 3.0}

    def traffic(rate: float) -> dict[str, Any]:
        total = {"requests": 10, "failures": 0, "requests_per_s": 80.0, "audio_s_per_s": rate, "latency_ms": lat}
        return {"clip_source": "clips", "total": total, "rounds": [total], "around": [(0, 1)],
                "clip_3s": {"requests": 5, "seconds": [2.75, 3.25], "p50": 1.0, "p95": 2.0, "p99": 3.0}}

    rate = {"median": 800.0}
    slices = [{"audio_s_per_s": {"batch_16": rate, "batch_1": rate}, "concurrent_calls": 2, "intra_op_threads": 1}] * 3
    work = {"short": {"requests": 100, "cpu_ms_per_request": 10.0, "onnxruntime_ms_per_request": 9.0,
                      "outside_onnxruntime_ms_per_request": 1.0, "cpu_efficiency": 0.9, "audio_s_per_cpu_s": 300.0},
            "mixed": {"requests": 50, "cpu_ms_per_request": 20.0, "onnxruntime_ms_per_request": 16.0,
                      "outside_onnxruntime_ms_per_request": 4.0, "cpu_efficiency": 0.8, "audio_s_per_cpu_s": 200.0}}
    metrics = {"batches": 5, "mean_batch_size": 2.0, "padding_share": 0.01, "rejected_503": 0, "server_cpu_s": 100.0,
               "client_cpu_s": 4.0, "by_traffic": work}
    machine = {"cpus": 2, "load_avg_before": [0.0, 0.0, 0.0], "model_version": "v", "model_sample_rate": 16000}
    result = write_reports(args, traffic(480.0), slices, metrics, 0.0, machine,
                           traffic={"short": traffic(640.0), "mixed": traffic(480.0)},
                           profiles={"gil": {"samples": 0}})
    assert result["traffic"]["short"]["ratio"] == 0.8 and result["traffic"]["mixed"]["ratio"] == 0.6
    verdicts = {g["goal"]: g["met"] for g in result["issue_23_goals"]}
    assert verdicts == {"outside_3s": True, "efficiency_short": True, "efficiency_mixed": False, "ratio_short": True,
                        "ratio_mixed": False}
    md = (tmp_path / "LOADTEST.md").read_text()
    assert "### Work per request" in md and "| short clips (1-5 s) only | 100 | 10.0 | 9.0 | 1.0 | 0.9 |" in md
    assert "## Goals: work per request" in md and "latency p50/p95/p99 1.0/2.0/3.0 ms" in md


def test_two_worker_processes_serve_one_port(tmp_path: Path) -> None:
    """A real `diffres serve` with DIFFRES_WORKERS=2: both processes answer on the one port (each tells its
    process id on /metrics), classify like the single process, and refuse repository calls with the reason."""
    import httpx

    from tests.conftest import MODEL_DIR
    from tools.loadtest.server import Server

    require_model("keywords")
    with Server({"DIFFRES_MODEL_DIR": str(MODEL_DIR), "DIFFRES_WORKERS": "2"}, tmp_path / "server.log") as server:
        assert len(server.metrics_by_process()) == 2  # two distinct diffres_process_id values answered
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answer = client.post("/v1/classify", files={"file": ("a.flac", (EXAMPLES / "alexa.flac").read_bytes())})
            assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "alexa"
            refused = client.post("/v2/repository/models/keywords/load")
            assert refused.status_code == 403 and "DIFFRES_WORKERS" in refused.json()["error"]


@pytest.mark.anyio
@pytest.mark.parametrize("stage", ["http", "multipart", "decode"])
async def test_the_front_end_floor_answers_like_the_service_and_decodes_when_asked(stage: str) -> None:
    """tools/loadtest/floor.py (the load test's measure of the front end alone): an answer locust accepts, and
    at the decode stage the upload is really decoded (a file that is not audio fails there, not before)."""
    import httpx

    from diffres.errors import DiffresError
    from diffres.models import MODELS_DIR
    from diffres.server.config import Settings
    from tools.loadtest.floor import app

    floor = app(stage, Settings(model_dir=MODELS_DIR, default_model="digits"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=floor), base_url="http://floor") as client:
        clip = (EXAMPLES / "alexa.flac").read_bytes()
        answer = (await client.post("/v1/classify", files={"file": ("a.flac", clip)})).json()
        assert answer["predictions"] and answer["frames"]
        if stage == "decode":
            with pytest.raises(DiffresError):
                await client.post("/v1/classify", files={"file": ("a.flac", b"not audio at all" * 10)})
        else:
            assert (await client.post("/v1/classify", files={"file": ("a.flac", b"not audio")})).status_code == 200
