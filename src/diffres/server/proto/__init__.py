"""The Open Inference Protocol v2 gRPC proto (KServe's grpc_predict_v2.proto, Apache-2.0) and its generated code.

grpc_predict_v2.proto is KServe's file with its licence header, plus Triton's ModelStreamInfer,
RepositoryIndex and repository load/unload fields (marked in the file); package `inference`, service `GRPCInferenceService`, as Triton's and KServe's
clients expect. The *_pb2*.py/.pyi files are generated and shipped (nothing is compiled at install
time), by grpcio-tools==1.66.2 (libprotoc 27.2): they need protobuf >= 5.27.2 and grpcio >= 1.66.2
at run time (pyproject.toml's floors; checked with protobuf 5.29 and 7.36, grpcio 1.85).

One line of grpc_predict_v2_pb2.py is changed after generation: its descriptors go into a pool of
their own instead of protobuf's default pool, because Triton's client (tritonclient.grpc) and
KServe's SDK register the same `inference.*` names there, and two such modules in one process
would fail with "duplicate symbol" (a server with tritonclient in its tests, a KServe predictor
beside it). The wire format does not depend on the pool. (protobuf's pure-Python backend still
registers names globally; the default upb backend does not.) Regenerate after changing the .proto,
from the repository root, with that grpcio-tools in a separate venv:

    python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \\
        src/diffres/server/proto/grpc_predict_v2.proto
    sed -i 's/^DESCRIPTOR = _descriptor_pool.Default()/DESCRIPTOR = _descriptor_pool.DescriptorPool()/' \\
        src/diffres/server/proto/grpc_predict_v2_pb2.py
"""
