"""Torch-free runtime core: the ONNX contract, the session factory, the decoder, the window plan, the clock.

Everything that runs an exported model (the service, parity, benchmarks, the load test, the
comparison) goes through this package; `runtime.contract` is a standard-library-only leaf that the
model and the exporter import too, so frame arithmetic has one home.
"""
