"""Load test of the service: locust traffic vs in-process onnxruntime on the same clips (`python -m tools.loadtest`)."""
