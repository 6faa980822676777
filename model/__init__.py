"""DiffRes audio classifier: waveform -> log-mel -> DiffRes -> CNN backbone (PyTorch side)."""
