"""A client written by others against our /v2: Triton's `tritonclient[http]` on a real uvicorn server.

The server is `diffres serve` on 127.0.0.1 and a free port (tools.loadtest.server, always stopped). The
client reads readiness and metadata, and infers with JSON tensors and with binary tensors; its
logits, frame counts and log-mel must equal onnxruntime run in this process on the same padded
batch with the same lengths. KServe's Python SDK (`kserve`, whose InferenceRESTClient speaks the
same protocol) is not installed by the test set-up: see the README (Triton and KServe section).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import soundfile as sf
import soxr

from diffres import contract as c
from diffres.runner import OnnxModel, pad_rows
from tests.conftest import DATA_DIR, MODEL_DIR, require_model, tone
from tools.loadtest.server import Server

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed ('.[interop]')")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "digits"
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # float noise only: row i is exact whatever it is batched with


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_model(MODEL)
    log = tmp_path_factory.mktemp("tritonclient") / "server.log"
    with Server({"DIFFRES_MODEL_DIR": str(MODEL_DIR), "DIFFRES_DEFAULT_MODEL": MODEL}, log, ready_timeout=120) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpclient.InferenceServerClient]:
    c_ = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), connection_timeout=30,
                                          network_timeout=60)
    yield c_
    c_.close()


@pytest.fixture(scope="module")
def local() -> OnnxModel:
    return OnnxModel.load(MODEL_DIR / f"{MODEL}.onnx", intra_op_threads=1)


def rows(rate: int) -> list[np.ndarray]:
    """Two rows of different lengths: real digit clips when ../shared/data is there, else tones."""
    folder = DATA_DIR / "digits"
    clips = sorted((folder / "7").glob("7_*_1.wav"))[:1] + sorted((folder / "3").glob("3_*_2.wav"))[:1]
    if len(clips) == 2:
        out = []
        for path in clips:
            x, sr = sf.read(path, dtype="float32")
            out.append(soxr.resample(x, sr, rate).astype(np.float32) if sr != rate else x)
        return out
    return [tone(0.6, rate, freq=300.0), tone(0.35, rate, freq=900.0)]


def inputs(waveform: np.ndarray, lengths: np.ndarray, binary: bool) -> list[httpclient.InferInput]:
    wave = httpclient.InferInput(c.WAVEFORM, list(waveform.shape), c.DATATYPES[c.WAVEFORM])
    wave.set_data_from_numpy(waveform, binary_data=binary)
    lens = httpclient.InferInput(c.LENGTHS, list(lengths.shape), c.DATATYPES[c.LENGTHS])
    lens.set_data_from_numpy(lengths, binary_data=binary)
    return [wave, lens]


def test_readiness_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_model_metadata_names_the_contract_tensors(client: httpclient.InferenceServerClient,
                                                   local: OnnxModel) -> None:
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {n: c.DATATYPES[n] for n in c.INPUTS}
    outputs = {t["name"]: t for t in meta["outputs"]}
    assert set(outputs) == set(c.OUTPUTS)
    assert all(outputs[n]["datatype"] == c.DATATYPES[n] for n in c.OUTPUTS)
    assert outputs[c.LOGITS]["shape"][-1] == len(local.info.labels)


@pytest.mark.parametrize("binary", [False, True], ids=["json-tensors", "binary-tensors"])
def test_infer_gives_the_logits_of_onnxruntime_in_process(client: httpclient.InferenceServerClient,
                                                          local: OnnxModel, binary: bool) -> None:
    waveform, lengths = pad_rows(rows(local.info.sample_rate))
    wanted = [c.LOGITS, c.FRAMES_IN, c.FRAMES_OUT, c.LOGMEL]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in wanted]
    result = client.infer(MODEL, inputs(waveform, lengths, binary), outputs=outputs, request_id="tc-1")
    expected = local.run_padded(waveform, lengths, wanted)
    np.testing.assert_allclose(result.as_numpy(c.LOGITS), expected[c.LOGITS], **TOLERANCE)
    np.testing.assert_array_equal(result.as_numpy(c.FRAMES_IN), expected[c.FRAMES_IN])
    np.testing.assert_array_equal(result.as_numpy(c.FRAMES_OUT), expected[c.FRAMES_OUT])
    np.testing.assert_allclose(result.as_numpy(c.LOGMEL), expected[c.LOGMEL], **TOLERANCE)
    assert result.get_response()["id"] == "tc-1"
    # The two rows really differ (a mix-up of rows would show).
    assert not np.allclose(expected[c.LOGITS][0], expected[c.LOGITS][1])


def test_errors_reach_the_client_as_exceptions(client: httpclient.InferenceServerClient,
                                               local: OnnxModel) -> None:
    waveform, lengths = pad_rows(rows(local.info.sample_rate))
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", inputs(waveform, lengths, True))
    too_long = lengths + waveform.shape[1]
    with pytest.raises(InferenceServerException, match=c.LENGTHS):
        client.infer(MODEL, inputs(waveform, too_long, True))
