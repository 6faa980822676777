"""Trained checkpoint -> ONNX (waveform in, logits and frame statistics out), with parity checks."""
