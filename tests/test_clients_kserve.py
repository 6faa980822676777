"""KServe's own OIP v2 client (`kserve.InferenceRESTClient`) against the real service.

The KServe SDK is not part of the test set-up: `pip install kserve` (0.21) pulls pandas, the
kubernetes client, grpcio-tools and cloudevents (about 150 MB beyond our venv) and pins psutil<6,
downgrading the psutil that locust uses. Where it is installed this test runs: readiness, and
inference with JSON and with binary tensors, equal to onnxruntime in this process.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from diffres import contract as c
from diffres.runner import OnnxModel, pad_rows
from tests.conftest import MODEL_DIR, require_model, tone
from tools.loadtest.server import Server

kserve = pytest.importorskip(
    "kserve", reason="KServe's SDK is not installed (heavy: pandas, kubernetes, grpcio-tools; pins psutil<6); "
                     "pip install kserve to run this test")
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput  # noqa: E402

MODEL = "digits"
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_model(MODEL)
    log = tmp_path_factory.mktemp("kserve") / "server.log"
    with Server({"DIFFRES_MODEL_DIR": str(MODEL_DIR)}, log, ready_timeout=120) as s:
        yield s


def request(binary: bool) -> tuple[InferRequest, np.ndarray, np.ndarray]:
    waveform, lengths = pad_rows([tone(0.6, 8000, freq=300.0), tone(0.35, 8000, freq=1200.0)])
    wave = InferInput(c.WAVEFORM, list(waveform.shape), c.DATATYPES[c.WAVEFORM])
    wave.set_data_from_numpy(waveform, binary_data=binary)
    lens = InferInput(c.LENGTHS, list(lengths.shape), c.DATATYPES[c.LENGTHS])
    lens.set_data_from_numpy(lengths, binary_data=binary)
    outputs = [RequestedOutput(n, {"binary_data": binary}) for n in (c.LOGITS, c.FRAMES_IN, c.FRAMES_OUT)]
    return InferRequest(MODEL, [wave, lens], request_id="ks-1", request_outputs=outputs), waveform, lengths


@pytest.mark.anyio
@pytest.mark.parametrize("binary", [False, True], ids=["json-tensors", "binary-tensors"])
async def test_kserve_client_gets_the_logits_of_onnxruntime(server: Server, binary: bool) -> None:
    local = OnnxModel.load(MODEL_DIR / f"{MODEL}.onnx", intra_op_threads=1)
    async with kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60)) as client:
        assert await client.is_server_live(server.url) and await client.is_server_ready(server.url)
        assert await client.is_model_ready(server.url, MODEL)
        req, waveform, lengths = request(binary)
        response = await client.infer(server.url, req, model_name=MODEL)
    expected = local.run_padded(waveform, lengths, [c.LOGITS, c.FRAMES_IN, c.FRAMES_OUT])
    got = {o.name: o.as_numpy() for o in response.outputs}
    np.testing.assert_allclose(got[c.LOGITS], expected[c.LOGITS], **TOLERANCE)
    np.testing.assert_array_equal(got[c.FRAMES_IN], expected[c.FRAMES_IN])
    np.testing.assert_array_equal(got[c.FRAMES_OUT], expected[c.FRAMES_OUT])
