"""The Open Inference Protocol v2 over gRPC, with Triton's own client against a real `diffres serve` process.

The server is `diffres serve` with DIFFRES_GRPC_PORT on free ports (tools.loadtest.server, always
stopped). `tritonclient.grpc` reads liveness, readiness and metadata, infers with raw contents and
over ModelStreamInfer; typed `contents` go through Triton's own generated stub
(tritonclient.grpc.service_pb2), which also shows the status codes and trailing metadata. Every
answer must equal what HTTP /v2 answers for the same padded batch with `lengths` (1e-5). Bad
requests get the documented status codes; keys, metrics, request ids and the SIGTERM drain behave
as over HTTP.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffres import contract as c
from diffres.runner import pad_rows
from tests.conftest import MODEL_DIR, metric_value, require_model, tone
from tools.loadtest.server import Server, get

grpc = pytest.importorskip("grpc")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed ('.[interop]')")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed ('.[interop]')")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "digits"
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
ALL_OUTPUTS = [c.LOGITS, c.IMPORTANCE, c.FRAMES_IN, c.FRAMES_OUT, c.LOGMEL]
MAX_ROW_S = 5  # DIFFRES_V2_MAX_ROW_S of the main server: a row over it is small to send
MAX_TENSOR_BYTES = 1 << 20  # DIFFRES_MAX_TENSOR_BYTES of the main server
KEY = "grpc-s3cret"
BASE_ENV = {"DIFFRES_MODEL_DIR": str(MODEL_DIR), "DIFFRES_DEFAULT_MODEL": MODEL}


def sample_rate(server: Server, key: str | None = None) -> int:
    """The model's rate, from the HTTP /v2 metadata (the gRPC message has no field for it)."""
    request = urllib.request.Request(f"{server.url}/v2/models/{MODEL}", headers={"X-API-Key": key} if key else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(json.loads(answer.read())["parameters"]["sample_rate"])


def start(tmp: pytest.TempPathFactory, name: str, **env: str) -> Server:
    require_model(MODEL)
    return Server({**BASE_ENV, **env}, tmp.mktemp(name) / "server.log", ready_timeout=120, grpc=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start(tmp_path_factory, "grpc", DIFFRES_V2_MAX_ROW_S=str(MAX_ROW_S),
               DIFFRES_MAX_TENSOR_BYTES=str(MAX_TENSOR_BYTES)) as s:
        yield s


@pytest.fixture(scope="module")
def rate(server: Server) -> int:
    return sample_rate(server)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    assert server.grpc_target is not None
    c_ = grpcclient.InferenceServerClient(server.grpc_target)
    yield c_
    c_.close()


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """Triton's generated stub: typed contents, trailing metadata and exact status codes."""
    assert server.grpc_target is not None
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def batch(rate: int) -> tuple[np.ndarray, np.ndarray]:
    """A padded batch of three rows of different lengths, with their lengths."""
    rows = [tone(0.9, rate, freq=300.0), tone(0.45, rate, freq=900.0), tone(1.3, rate, freq=1500.0)]
    return pad_rows(rows)


def grpc_inputs(waveform: np.ndarray, lengths: np.ndarray | None = None) -> list[grpcclient.InferInput]:
    """tritonclient's inputs: always raw_input_contents."""
    wave = grpcclient.InferInput(c.WAVEFORM, list(waveform.shape), "FP32")
    wave.set_data_from_numpy(waveform)
    if lengths is None:
        return [wave]
    lens = grpcclient.InferInput(c.LENGTHS, list(lengths.shape), "INT64")
    lens.set_data_from_numpy(lengths)
    return [wave, lens]


def requested(names: list[str]) -> list[grpcclient.InferRequestedOutput]:
    return [grpcclient.InferRequestedOutput(n) for n in names]


def typed_request(waveform: np.ndarray, lengths: np.ndarray, outputs: list[str]) -> Any:
    """A ModelInferRequest with typed contents (fp32_contents, int64_contents), asking for typed outputs."""
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed-1")
    wave = request.inputs.add(name=c.WAVEFORM, datatype="FP32", shape=waveform.shape)
    wave.contents.fp32_contents.extend(waveform.reshape(-1).tolist())
    lens = request.inputs.add(name=c.LENGTHS, datatype="INT64", shape=lengths.shape)
    lens.contents.int64_contents.extend(lengths.tolist())
    for name in outputs:
        request.outputs.add(name=name)
    request.parameters["binary_data_output"].bool_param = False
    return request


def typed_arrays(response: Any) -> dict[str, np.ndarray]:
    out = {}
    for t in response.outputs:
        values = t.contents.fp32_contents if t.datatype == "FP32" else t.contents.int64_contents
        out[t.name] = np.array(values, dtype=np.float32 if t.datatype == "FP32" else np.int64).reshape(list(t.shape))
    return out


@pytest.fixture(scope="module")
def http_answer(server: Server, rate: int) -> dict[str, np.ndarray]:
    """What HTTP /v2 (binary tensors, tritonclient.http) answers for `batch()`: the reference."""
    waveform, lengths = batch(rate)
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
    try:
        inputs = []
        for name, array, dtype in ((c.WAVEFORM, waveform, "FP32"), (c.LENGTHS, lengths, "INT64")):
            tensor = httpclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        result = client.infer(MODEL, inputs, outputs=[httpclient.InferRequestedOutput(n, binary_data=True)
                                                      for n in ALL_OUTPUTS])
        return {n: result.as_numpy(n) for n in ALL_OUTPUTS}
    finally:
        client.close()


def assert_same(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert set(arrays) == set(reference)
    for name, expected in reference.items():
        assert arrays[name].shape == expected.shape, name
        if expected.dtype == np.int64:
            np.testing.assert_array_equal(arrays[name], expected, err_msg=name)
        else:
            np.testing.assert_allclose(arrays[name], expected, err_msg=name, **TOLERANCE)


def error_of(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------ health and metadata

def test_live_ready_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    server = client.get_server_metadata()
    assert server.name == "diffres-service" and "binary_tensor_data" in server.extensions
    meta = client.get_model_metadata(MODEL)
    assert meta.name == MODEL and meta.platform == "onnxruntime_onnx" and list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (c.WAVEFORM, "FP32", [-1, -1]), (c.LENGTHS, "INT64", [-1])]
    outputs = {t.name: t for t in meta.outputs}
    assert list(outputs) == list(c.OUTPUTS) and all(outputs[n].datatype == c.DATATYPES[n] for n in c.OUTPUTS)
    assert list(outputs[c.LOGITS].shape)[0] == -1 and outputs[c.LOGITS].shape[1] > 1
    assert client.is_model_ready(MODEL, model_version="1")  # the repository's version, as Triton's
    with pytest.raises(InferenceServerException, match="has version 1 ready, not '1-other'"):
        client.is_model_ready(MODEL, model_version=meta.versions[0] + "-other")


# ------------------------------------------------------------------ inference equals HTTP /v2

def test_raw_contents_padded_batch_equals_http(client: grpcclient.InferenceServerClient, rate: int,
                                               http_answer: dict[str, np.ndarray]) -> None:
    waveform, lengths = batch(rate)
    result = client.infer(MODEL, grpc_inputs(waveform, lengths), outputs=requested(ALL_OUTPUTS), request_id="raw-1")
    response = result.get_response()
    assert response.id == "raw-1" and response.model_name == MODEL
    assert [t.name for t in response.outputs] == ALL_OUTPUTS and len(response.raw_output_contents) == 5
    assert_same({n: result.as_numpy(n) for n in ALL_OUTPUTS}, http_answer)
    # The rows really differ, and each ran on its own length (frames follow `lengths`).
    assert not np.allclose(http_answer[c.LOGITS][0], http_answer[c.LOGITS][1])
    frames = http_answer[c.FRAMES_IN]
    assert len(set(frames)) == 3 and list(np.argsort(frames)) == list(np.argsort(lengths))


def test_typed_contents_equal_http(stub: service_pb2_grpc.GRPCInferenceServiceStub, rate: int,
                                   http_answer: dict[str, np.ndarray]) -> None:
    waveform, lengths = batch(rate)
    response = stub.ModelInfer(typed_request(waveform, lengths, ALL_OUTPUTS), timeout=60)
    assert response.id == "typed-1" and not response.raw_output_contents
    assert_same(typed_arrays(response), http_answer)


def test_default_outputs_and_selection(client: grpcclient.InferenceServerClient, rate: int) -> None:
    waveform = tone(0.5, rate)[None, :]
    default = client.infer(MODEL, grpc_inputs(waveform)).get_response()
    assert [t.name for t in default.outputs] == [c.LOGITS, c.IMPORTANCE, c.FRAMES_IN, c.FRAMES_OUT]
    picked = client.infer(MODEL, grpc_inputs(waveform), outputs=requested([c.FRAMES_OUT, c.LOGMEL])).get_response()
    assert [t.name for t in picked.outputs] == [c.FRAMES_OUT, c.LOGMEL]


def test_stream_gives_the_same_answers_in_order(client: grpcclient.InferenceServerClient, rate: int,
                                                http_answer: dict[str, np.ndarray]) -> None:
    """ModelStreamInfer: requests run concurrently, answers come in order; an error answers only its request."""
    waveform, lengths = batch(rate)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(4):
            client.async_stream_infer(MODEL, grpc_inputs(waveform, lengths), outputs=requested(ALL_OUTPUTS),
                                      request_id=f"s{i}")
        client.async_stream_infer("nope", grpc_inputs(waveform, lengths), request_id="bad")
        client.async_stream_infer(MODEL, grpc_inputs(waveform, lengths), outputs=requested(ALL_OUTPUTS),
                                  request_id="after")
        got = [answers.get(timeout=60) for _ in range(6)]
    finally:
        client.stop_stream()
    good = [(r, e) for r, e in got if e is None]
    assert [r.get_response().id for r, _ in good] == ["s0", "s1", "s2", "s3", "after"]
    for result, _ in good:
        assert_same({n: result.as_numpy(n) for n in ALL_OUTPUTS}, http_answer)
    (error,) = [e for _, e in got if e is not None]
    assert "unknown model 'nope'" in str(error)


# ------------------------------------------------------------------ status codes

def test_bad_requests_get_the_right_status(client: grpcclient.InferenceServerClient, rate: int,
                                           stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    waveform, lengths = batch(rate)

    def status(inputs: list[Any], model: str = MODEL, **kwargs: Any) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, inputs, **kwargs)
        return str(info.value.status()), info.value.message()

    assert status(grpc_inputs(waveform, lengths), "nope")[0] == "StatusCode.NOT_FOUND"
    code, message = status([_input(c.WAVEFORM, waveform.astype(np.float64), "FP64")])
    assert code == "StatusCode.INVALID_ARGUMENT" and "must be FP32" in message
    code, message = status(grpc_inputs(waveform.reshape(-1)))
    assert code == "StatusCode.INVALID_ARGUMENT" and "[batch, samples]" in message
    code, message = status(grpc_inputs(waveform, lengths + waveform.shape[1]))
    assert code == "StatusCode.INVALID_ARGUMENT" and c.LENGTHS in message
    code, message = status(grpc_inputs(waveform, lengths), outputs=requested(["nope"]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "unknown outputs" in message
    too_long = np.zeros((1, (MAX_ROW_S + 1) * rate), np.float32)  # under the message limit
    code, message = status(grpc_inputs(too_long))
    assert code == "StatusCode.INVALID_ARGUMENT" and "DIFFRES_V2_MAX_ROW_S" in message
    huge = np.zeros((8, MAX_TENSOR_BYTES // 16), np.float32)  # 2 MiB: gRPC refuses the message itself
    assert status(grpc_inputs(huge))[0] == "StatusCode.RESOURCE_EXHAUSTED"
    # Raw and typed contents mixed, and typed values in the wrong field: clear INVALID_ARGUMENTs.
    request = typed_request(waveform, lengths, [c.LOGITS])
    request.raw_input_contents.extend([waveform.tobytes(), lengths.tobytes()])
    error = error_of(stub.ModelInfer, request, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "not both" in error.details()
    request = typed_request(waveform, lengths, [c.LOGITS])
    request.inputs[0].contents.ClearField("fp32_contents")
    request.inputs[0].contents.fp64_contents.extend(waveform.reshape(-1).tolist())
    error = error_of(stub.ModelInfer, request, timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "contents.fp32_contents" in error.details()
    assert dict(error.trailing_metadata())["diffres-error-code"] == "invalid_tensor"
    # Repository control is off without admin keys (or DIFFRES_ADMIN_LOOPBACK): PERMISSION_DENIED, and says so.
    error = error_of(stub.RepositoryModelLoad, service_pb2.RepositoryModelLoadRequest(model_name=MODEL), timeout=30)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "DIFFRES_ADMIN_KEYS" in error.details()


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_request_id_metrics_and_access_log(server: Server, rate: int,
                                          stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    waveform, lengths = batch(rate)
    request = typed_request(waveform, lengths, [c.LOGITS])
    _, call = stub.ModelInfer.with_call(request, metadata=[("x-request-id", "grpc-req-42")], timeout=60)
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-req-42"
    text = get(f"{server.url}/metrics").decode()
    route = "grpc:/inference.GRPCInferenceService/ModelInfer"
    assert metric_value(text, "diffres_http_requests_total", route=route, method="GRPC", status="OK") >= 1
    assert metric_value(text, "diffres_http_requests_total", route=route, method="GRPC", status="NOT_FOUND") >= 1
    assert metric_value(text, "diffres_http_request_duration_seconds_count", route=route, method="GRPC") >= 2
    deadline = time.monotonic() + 5
    while "grpc-req-42" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in server.log_path.read_text().splitlines() if "grpc-req-42" in x)
    assert '"route": "grpc:/inference.GRPCInferenceService/ModelInfer"' in line and '"status": "OK"' in line


# ------------------------------------------------------------------ keys, overload, shutdown

def test_api_keys_in_metadata(tmp_path_factory: pytest.TempPathFactory) -> None:
    with start(tmp_path_factory, "grpc-keys", DIFFRES_API_KEYS=KEY, DIFFRES_WARMUP="false") as keyed:
        assert keyed.grpc_target is not None
        rate = sample_rate(keyed, KEY)
        client = grpcclient.InferenceServerClient(keyed.grpc_target)
        try:
            assert client.is_server_live() and client.is_server_ready()  # probes stay open
            for headers, says in ((None, "needs a key"), ({"x-api-key": "wrong"}, "not valid")):
                with pytest.raises(InferenceServerException) as info:
                    client.get_model_metadata(MODEL, headers=headers)
                assert str(info.value.status()) == "StatusCode.UNAUTHENTICATED" and says in info.value.message()
            assert client.get_model_metadata(MODEL, headers={"authorization": f"Bearer {KEY}"}).name == MODEL
            waveform = tone(0.5, rate)[None, :]
            assert client.infer(MODEL, grpc_inputs(waveform), headers={"x-api-key": KEY}).as_numpy(c.LOGITS) is not None
            errors: queue.Queue[Any] = queue.Queue()
            client.start_stream(callback=lambda result, error: errors.put(error))  # a stream without a key
            try:  # refused at once: the request may find the stream already ended
                client.async_stream_infer(MODEL, grpc_inputs(waveform))
            except InferenceServerException as exc:
                assert "no longer in valid state" in str(exc)
            error = errors.get(timeout=30)
            client.stop_stream()
            assert error is not None and "UNAUTHENTICATED" in str(error.status())
        finally:
            client.close()


def test_overload_and_sigterm_drain(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A call waits 2 s in the batcher; a second finds no room (RESOURCE_EXHAUSTED, retry advice); SIGTERM
    then refuses new calls while the first one finishes, and the process exits cleanly."""
    with start(tmp_path_factory, "grpc-drain", DIFFRES_BATCH_WAIT_MS="2000", DIFFRES_QUEUE_LIMIT="1",
               DIFFRES_BATCH_SIZE="4", DIFFRES_WARMUP="false") as slow:
        assert slow.grpc_target is not None and slow.proc is not None
        rate = sample_rate(slow)
        with grpc.insecure_channel(slow.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            waveform = tone(0.5, rate)[None, :]
            request = typed_request(waveform, np.array([waveform.shape[1]]), [c.LOGITS])
            in_flight = stub.ModelInfer.future(request, timeout=60)
            time.sleep(0.7)  # it holds the one work unit, waiting for batch-mates
            error = error_of(stub.ModelInfer, request, timeout=30)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry after 1 s" in error.details()
            assert dict(error.trailing_metadata())["retry-after"] == "1"
            os.killpg(slow.proc.pid, signal.SIGTERM)
            time.sleep(0.3)
            refused = error_of(stub.ModelInfer, request, timeout=30)
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            answer = in_flight.result(timeout=60)  # the call in flight still finishes
            assert len(answer.outputs) == 1 and answer.outputs[0].name == c.LOGITS
        # uvicorn re-raises the signal after its graceful shutdown, so "clean" reads as killed-by-SIGTERM.
        assert slow.proc.wait(timeout=60) in (0, -signal.SIGTERM)
        log = slow.log_path.read_text()
        assert "gRPC: draining calls in flight" in log and "gRPC: stopped" in log and "batchers drained" in log


def test_the_shipped_proto_matches_its_generated_code() -> None:
    """The .proto travels with the package, licence header and all; its generated code defines the same
    service, and the stream rpc Triton's client uses."""
    from diffres.server.proto import grpc_predict_v2_pb2 as pb

    proto = Path(pb.__file__).with_name("grpc_predict_v2.proto").read_text()
    assert proto.startswith("// Copyright 2022 The KServe Authors.") and "Apache License, Version 2.0" in proto
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {m.name: m for m in service.methods}
    for name in methods:
        assert f"rpc {name}(" in proto
    assert methods["ModelStreamInfer"].output_type.full_name == "inference.ModelStreamInferResponse"
    triton = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]  # Triton's, in this same process
    for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
                 "ModelStreamInfer"):
        ours, theirs = methods[name], triton.methods_by_name[name]
        assert (ours.client_streaming, ours.server_streaming) == (theirs.client_streaming, theirs.server_streaming)
        for kind in ("input_type", "output_type"):  # wire-compatible: every field of ours is Triton's too
            assert fields(getattr(ours, kind)) <= fields(getattr(theirs, kind)), (name, kind)


def fields(message: Any) -> set[tuple[str, ...]]:
    """(path, number, type) of every field of a message, nested messages included."""
    out: set[tuple[str, ...]] = set()
    for f in message.fields:
        out.add((f"{message.name}.{f.name}", str(f.number), str(f.type)))
        if f.message_type is not None and f.message_type.name != message.name:
            out |= {(f"{message.name}.{path}", *rest) for path, *rest in fields(f.message_type)}
    return out


def test_protocol_benchmark_accounting(tmp_path: Path) -> None:
    """tools/loadtest/protocols.py without a server: CPU per request and per audio second, and its report."""
    import argparse

    from tools.loadtest.protocols import summary
    from tools.loadtest.report import write_protocol_reports

    records = [(10.0 + i, 10.5 + i, "grpc", True, 200, 2.0) for i in range(10)]
    phases = [{"protocol": "grpc", "records": records, "start": 10.0, "server_cpu_s": 0.5, "client_cpu_s": 0.1},
              {"protocol": "v1", "records": [(10.0, 11.0, "v1", False, 0, 0.0)], "start": 10.0,
               "server_cpu_s": None, "client_cpu_s": 0.0}]
    out = summary(phases, "test")
    assert out["grpc"]["server_cpu_ms_per_request"] == 50.0 and out["grpc"]["server_cpu_s_per_audio_s"] == 0.025
    assert out["grpc"]["client_cpu_ms_per_request"] == 10.0 and out["grpc"]["requests"] == 10
    assert out["v1"]["server_cpu_ms_per_request"] is None and out["v1"]["failures"] == 1
    args = argparse.Namespace(protocols=["grpc", "v1"], concurrency=4, seconds=5.0, rounds=1, clips=3,
                              model=MODEL, seed=0, out=tmp_path)
    write_protocol_reports(args, out, 0.0, {"cpus": 2, "load_avg_before": [0.0, 0.0, 0.0], "model_sample_rate": 8000})
    table = (tmp_path / "PROTOCOLS.md").read_text()
    assert "| gRPC ModelInfer, raw tensors | 10 | 0 |" in table and "HTTP /v1/classify" in table
    assert json.loads((tmp_path / "protocols.json").read_text())["protocols"]["grpc"]["requests"] == 10


def test_ray_serve_grpc_ingress(tmp_path_factory: pytest.TempPathFactory, http_answer: dict[str, np.ndarray],
                                rate: int) -> None:
    """The same service behind Ray Serve's gRPC proxy (`make serve-ray` with DIFFRES_GRPC_PORT): metadata,
    the same answers unary and streamed, status codes and keys; skipped where Ray cannot run."""
    pytest.importorskip("ray.serve", reason="Ray is not installed (pip install -e '.[ray]')")
    from tools.loadtest.ray_server import RayCannotStart, RayServer

    env = {**BASE_ENV, "DIFFRES_API_KEYS": KEY}
    try:
        with RayServer(env, tmp_path_factory.mktemp("grpc-ray") / "launcher.log", replicas=1, grpc=True) as ray:
            assert ray.grpc_target is not None
            client = grpcclient.InferenceServerClient(ray.grpc_target)
            try:
                keyed = {"x-api-key": KEY}
                assert client.is_server_live() and client.is_server_ready()
                assert client.get_model_metadata(MODEL, headers=keyed).name == MODEL
                with pytest.raises(InferenceServerException, match="needs a key"):
                    client.get_model_metadata(MODEL)
                waveform, lengths = batch(rate)
                result = client.infer(MODEL, grpc_inputs(waveform, lengths), outputs=requested(ALL_OUTPUTS),
                                      headers=keyed)
                assert_same({n: result.as_numpy(n) for n in ALL_OUTPUTS}, http_answer)
                with pytest.raises(InferenceServerException) as info:
                    client.infer("nope", grpc_inputs(waveform, lengths), headers=keyed)
                assert str(info.value.status()) == "StatusCode.NOT_FOUND"
                answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
                client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=keyed)
                for i in range(2):
                    client.async_stream_infer(MODEL, grpc_inputs(waveform, lengths), outputs=requested(ALL_OUTPUTS),
                                              request_id=f"ray{i}")
                got = [answers.get(timeout=120) for _ in range(2)]
                client.stop_stream()
                assert [(r.get_response().id, e) for r, e in got] == [("ray0", None), ("ray1", None)]
                assert_same({n: got[1][0].as_numpy(n) for n in ALL_OUTPUTS}, http_answer)
            finally:
                client.close()
    except RayCannotStart as exc:
        pytest.skip(f"Ray could not start a local cluster on this machine: {str(exc)[-300:]}")
