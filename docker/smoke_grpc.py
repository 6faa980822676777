"""gRPC part of docker/smoke.sh, run by the image's own Python (`docker exec -i NAME python - PORT < this`).

Uses the service's shipped proto (diffres.server.proto), so it needs nothing beyond the image: the
server must be ready over gRPC, and one raw-tensor ModelInfer on the default model must answer logits.
"""

import sys

import grpc
import numpy as np

from diffres.server.proto import grpc_predict_v2_pb2 as pb
from diffres.server.proto import grpc_predict_v2_pb2_grpc as pb_grpc

with grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}") as channel:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready, "gRPC: not ready"
    request = pb.ModelInferRequest()
    waveform = np.zeros((1, 16000), np.float32)
    request.inputs.add(name="waveform", datatype="FP32", shape=waveform.shape)
    request.raw_input_contents.append(waveform.tobytes())
    answer = stub.ModelInfer(request, timeout=60)
    assert answer.outputs[0].name == "logits" and answer.raw_output_contents, answer
    print(f"gRPC ModelInfer: {answer.model_name} {answer.model_version}, outputs {[o.name for o in answer.outputs]}")
