"""Training and ONNX export: waveform -> log-mel -> DiffRes -> CNN backbone, in PyTorch.

Needs the `train` extra (torch, onnx); every module that uses them imports them through
`requires`, which names the extra when they are missing. `config` and `options` (the dataclass
configs and the command lines) are torch-free, so `diffres train --help` works anywhere.
Reading order of the model: dsp -> frontend -> diffres -> baselines -> backbone -> classifier.
"""
