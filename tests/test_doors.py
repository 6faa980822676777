"""One answer through every door: REST, the Python API, the client (sync and async) and the CLI agree.

A real `diffres serve` on 127.0.0.1 serves the client and the CLI's --url; the Python API and the
in-process CLI run the same pipeline without it. Answers must be equal field for field, timings aside.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

import diffres
from diffres.errors import ModelNotFound, Overloaded, Unauthorized, UndecodableAudio
from diffres.schemas import ClassifyResult, StreamEnd, StreamEvent, StreamReady
from tests.conftest import EXAMPLES, REPO_ROOT, serve, without_timing
from tools.loadtest.server import Server

LONG = EXAMPLES / "long.flac"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server({}, tmp_path_factory.mktemp("doors") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def clf() -> diffres.Classifier:
    return diffres.Classifier.load("keywords")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "diffres", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300)


@pytest.mark.anyio
async def test_rest_and_the_python_api_give_the_same_answer(clf: diffres.Classifier) -> None:
    query = "include_importance=true&top_k=3&min_score=0.5&thresholds=alexa:0.9"
    async with serve() as s:
        rest = (await s.client.post(f"/v1/classify?{query}", files={"file": ("long.flac", LONG.read_bytes())})).json()
    api = clf.classify(LONG, include_importance=True, top_k=3, min_score=0.5, thresholds={"alexa": 0.9})
    assert rest["events"] and rest["segments"]
    assert without_timing(rest) == without_timing(api)


def test_the_client_answers_as_the_python_api(server: Server, clf: diffres.Classifier) -> None:
    with diffres.Client(server.url) as client:
        remote = client.classify(LONG, include_importance=True)
        assert isinstance(remote, ClassifyResult)
        assert without_timing(remote) == without_timing(clf.classify(LONG, include_importance=True))
        samples, sr = sf.read(EXAMPLES / "alexa.flac", dtype="float32")
        from_samples = client.classify(samples, sr)  # sent as a float WAV: the same samples
        assert from_samples.predictions == clf.classify(samples, sr).predictions
        batch = client.classify_batch([EXAMPLES / "alexa.flac", b"not audio", EXAMPLES / "computer.flac"])
        assert [item.status for item in batch.results] == [200, 400, 200]
        assert batch.results[1].error is not None and batch.results[1].error.code == "invalid_audio"
        assert without_timing(batch.results[2].result) == without_timing(clf.classify(EXAMPLES / "computer.flac"))
        listed = client.models()
        assert [m.name for m in listed.models] == ["digits", "keywords"] and listed.default_model == "keywords"
        assert listed.models[1].labels == list(clf.labels)


def test_the_async_client_answers_as_the_sync_one(server: Server) -> None:
    async def both() -> tuple[Any, Any]:
        async with diffres.AsyncClient(server.url) as client:
            return await client.classify(LONG), [m async for m in client.stream(_pcm_chunks(), 16000)]

    result, messages = asyncio.run(both())
    with diffres.Client(server.url) as client:
        assert without_timing(result) == without_timing(client.classify(LONG))
    assert [(m.label, m.start_s) for m in messages if isinstance(m, StreamEvent) and m.type == "event"] == \
        [(e.label, e.start_s) for e in result.events or []]


def _pcm_chunks() -> list[bytes]:
    samples, _ = sf.read(LONG, dtype="int16")
    pcm = samples.astype("<i2").tobytes()
    return [pcm[i:i + 6400] for i in range(0, len(pcm), 6400)]


def test_the_client_streams_the_events_the_python_api_streams(server: Server, clf: diffres.Classifier) -> None:
    with diffres.Client(server.url) as client:
        messages = list(client.stream(_pcm_chunks(), 16000, windows=True))
    assert isinstance(messages[0], StreamReady) and isinstance(messages[-1], StreamEnd)
    events = [m for m in messages if isinstance(m, StreamEvent) and m.type == "event"]
    samples, sr = sf.read(LONG, dtype="int16")
    local = list(clf.stream([samples.astype("<i2").tobytes()], sr))
    assert [(e.label, e.start_s, e.end_s) for e in events] == [(e.label, e.start_s, e.end_s) for e in local]
    assert messages[-1].events == len(events) and messages[-1].windows == sum(m.type == "window" for m in messages)


def test_error_answers_raise_the_python_api_errors(server: Server) -> None:
    with diffres.Client(server.url) as client:
        with pytest.raises(UndecodableAudio) as bad:
            client.classify(b"not audio at all")
        assert bad.value.status == 400 and "could not decode audio" in bad.value.message
        with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
            client.classify(EXAMPLES / "alexa.flac", model="nope")
        with pytest.raises(ModelNotFound):
            list(client.stream([b"\0\0"], model="nope"))


def test_a_missing_key_is_unauthorized(tmp_path: Path) -> None:
    with Server({"DIFFRES_API_KEYS": "s3cret", "DIFFRES_WARMUP": "false"}, tmp_path / "keyed.log") as keyed:
        with diffres.Client(keyed.url) as client, pytest.raises(Unauthorized):
            client.models()
        with diffres.Client(keyed.url, api_key="s3cret") as client:
            assert client.models().default_model == "keywords"


def test_503_is_retried_after_its_retry_after_then_raised() -> None:
    answer = ClassifyResult.model_validate_json(
        json.dumps({"model": "m", "model_version": "1", "duration_s": 1.0, "sample_rate": 16000, "channels": 1,
                    "format": "WAV/PCM_16", "detected": False, "min_score": 0.6, "predictions": [],
                    "frames": {"input": 1, "output": 1, "reduction": 0.0},
                    "timing_ms": {"decode": 0, "inference": 0, "total": 0}}))
    busy = {"error": {"code": "overloaded", "message": "at capacity"}}
    replies = iter([httpx.Response(503, json=busy, headers={"Retry-After": "0"}),
                    httpx.Response(200, content=answer.model_dump_json())])
    seen: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return next(replies)

    with diffres.Client("http://test", transport=httpx.MockTransport(reply)) as client:
        assert client.classify(b"RIFF") == answer and len(seen) == 2
    always_busy = httpx.MockTransport(lambda r: httpx.Response(503, json=busy, headers={"Retry-After": "0"}))
    with diffres.Client("http://test", transport=always_busy, retries=1) as client:
        with pytest.raises(Overloaded, match="at capacity") as refused:
            client.classify(b"RIFF")
    assert refused.value.status == 503


def test_the_cli_prints_the_api_answer_in_process_and_remote(server: Server, clf: diffres.Classifier) -> None:
    local = cli("classify", "--json", str(LONG))
    remote = cli("classify", "--json", "--url", server.url, str(LONG))
    assert local.returncode == remote.returncode == 0, local.stderr + remote.stderr
    api = without_timing(clf.classify(LONG))
    assert without_timing(json.loads(local.stdout)) == api == without_timing(json.loads(remote.stdout))
    table = cli("classify", str(LONG), str(EXAMPLES / "three.wav"))
    assert table.returncode == 0 and all(e.label in table.stdout for e in api_events(clf))
    assert f"nothing detected above the threshold (min_score {clf.info.min_score:g})" in table.stdout  # no keyword


def api_events(clf: diffres.Classifier) -> list[Any]:
    return clf.classify(LONG).events or []


def test_cli_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    run = cli("classify", "--json", str(bad), str(EXAMPLES / "alexa.flac"))
    assert run.returncode == 1  # a bad file: reported, the others still answered
    first, second = (json.loads(line) for line in run.stdout.splitlines())
    assert first["error"]["code"] == "invalid_audio" and second["predictions"][0]["label"] == "alexa"
    assert cli("classify", "--model", "nope", str(EXAMPLES / "alexa.flac")).returncode == 1
    assert cli("classify", "--no-such-option", str(bad)).returncode == 2
    assert cli("classify", "--url", "http://127.0.0.1:9", str(bad)).returncode == 1  # nothing listens there
    models = cli("models", "--json")
    assert models.returncode == 0 and json.loads(models.stdout)["default_model"] == "keywords"


BLOCK_TORCH = ("import sys; sys.modules.update(torch=None, onnx=None); from diffres.cli import main; "
               "sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", [[], ["serve"], ["classify"], ["models"], ["train"], ["calibrate"], ["export"]])
def test_every_help_works_without_torch(command: list[str]) -> None:
    run = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *command, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert "usage: diffres" in run.stdout


def test_training_without_the_extra_names_it(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "train", "--data", str(tmp_path), "--out",
                          str(tmp_path / "run"), "--sample-rate", "16000"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "`train` extra" in run.stderr and "pip install" in run.stderr


def test_calibrate_without_the_extra_names_it_and_a_missing_run_is_named(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "calibrate", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1 and "`train` extra" in run.stderr
    missing = cli("calibrate", str(tmp_path / "no-run"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    said = "".join(missing.stderr.split())  # the console may fold a long path: compare without whitespace
    assert f"nosuchfileorfolder:{tmp_path / 'no-run' / 'best.pt'}" in said


def long_words() -> list[tuple[str, float, float]]:
    """Where examples/README.md says long.flac's words are: (label, onset, offset)."""
    text = (EXAMPLES / "README.md").read_text()
    return [(line.split(":")[0][2:], *map(float, line.split(": ")[1].rstrip(" s").split("-")))
            for line in text.splitlines() if line.startswith("- ") and line.endswith(" s")]


def test_samples_in_examples_match_their_readme() -> None:
    """The README of examples/ says where long.flac's words are: every event the model reports lies on one of
    them, with its label; at the model's strict default threshold (chosen for few false alarms in speech)
    it finds at least four of the five, and all five at min_score 0.5."""
    words = long_words()
    assert len(words) == 5
    samples, sr = sf.read(LONG, dtype="float32")
    assert len(samples) == 30 * sr and np.abs(samples).max() <= 1.0
    clf = diffres.Classifier.load("keywords")
    for min_score, at_least in ((None, 4), (0.5, 5)):
        found = clf.classify(LONG, min_score=min_score).events or []
        assert all(any(e.label == label and e.start_s < offset and e.end_s > onset for label, onset, offset in words)
                   for e in found), found
        hits = [w for w in words if any(e.label == w[0] and e.start_s < w[2] and e.end_s > w[1] for e in found)]
        assert len(hits) >= at_least, (min_score, hits)


def test_readme_examples_print_what_the_readme_shows() -> None:
    """README.md's curl, Python and CLI outputs are what the code prints now (timings aside)."""
    from tools import readme_examples

    assert readme_examples.main(["--check"]) == 0
