"""DiffRes audio-classification service: onnxruntime models behind a FastAPI app (no torch)."""
