"""The comparison's variants and budget: what `python -m tools.compare` trains and `python -m tools.bench` times.

Standard library and diffres.train.config only (no torch), so the benchmark can export the same variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffres.train.config import FrontendConfig, ModelConfig

EPOCHS = {"keywords": 8, "digits": 20}  # per dataset: ~2-6 min a run on 2 cores
DEFAULT_EPOCHS = 10


@dataclass(frozen=True)
class Variant:
    name: str
    resolution: str
    delta: float
    hop_ms: float = 10.0
    compression: str = "log"
    estimator: tuple[int, int] | None = None  # DiffRes importance CNN (channels, blocks); None: ModelConfig's


VARIANTS = [
    Variant("full", "full", 0.0),
    # DiffRes rows first run with the 64 x 3 estimator keep it, so a re-run reproduces the committed runs.
    Variant("diffres-0.25", "diffres", 0.25, estimator=(64, 3)),
    Variant("diffres-0.5", "diffres", 0.5, estimator=(64, 3)),
    Variant("diffres-0.75", "diffres", 0.75, estimator=(64, 3)),
    Variant("avgpool-0.5", "avgpool", 0.5),
    Variant("avgpool-0.75", "avgpool", 0.75),
    Variant("avgmaxpool-0.5", "avgmaxpool", 0.5),
    Variant("avgmaxpool-0.75", "avgmaxpool", 0.75),
    Variant("changehop-0.5", "changehop", 0.5),
    Variant("changehop-0.75", "changehop", 0.75),
    # 2.5 ms hop = 4x the frames; DiffRes 0.75 hands the backbone as many as full resolution at 10 ms
    Variant("highres-2.5ms-diffres-0.75", "diffres", 0.75, hop_ms=2.5, estimator=(64, 3)),
    Variant("full-loglearn", "full", 0.0, compression="loglearn"),
    Variant("diffres-0.5-loglearn", "diffres", 0.5, compression="loglearn", estimator=(64, 3)),
    # issue 14: the 16 x 2 estimator (the shipped one, ModelConfig's default) paired with 64 x 3 re-run by the
    # same code (the older rows predate the `lengths` graph), and at the other deltas against the older rows
    Variant("diffres-0.5-est64x3", "diffres", 0.5, estimator=(64, 3)),
    Variant("diffres-0.5-est16x2", "diffres", 0.5, estimator=(16, 2)),
    Variant("diffres-0.25-est16x2", "diffres", 0.25, estimator=(16, 2)),
    Variant("diffres-0.75-est16x2", "diffres", 0.75, estimator=(16, 2)),
    Variant("diffres-0.25-est64x3", "diffres", 0.25, estimator=(64, 3)),
    Variant("diffres-0.75-est64x3", "diffres", 0.75, estimator=(64, 3)),
]
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}
# (variant, reference, why the pair matters)
PAIRS = [(v.name, "full", "vs full resolution") for v in VARIANTS[1:11]] + [
    ("diffres-0.5", "avgpool-0.5", "vs pooling, same frames"), ("diffres-0.5", "avgmaxpool-0.5", "vs pooling, same frames"),
    ("diffres-0.5", "changehop-0.5", "vs longer hop, same frames"), ("diffres-0.75", "avgpool-0.75", "vs pooling, same frames"),
    ("diffres-0.75", "avgmaxpool-0.75", "vs pooling, same frames"), ("diffres-0.75", "changehop-0.75", "vs longer hop, same frames"),
    ("full-loglearn", "full", "log-learn vs log"), ("diffres-0.5-loglearn", "diffres-0.5", "log-learn vs log"),
    ("diffres-0.5-est16x2", "diffres-0.5-est64x3", "16x2 vs 64x3 estimator, same code"),
    ("diffres-0.5-est64x3", "diffres-0.5", "the same model, today's code vs the older runs"),
    ("diffres-0.25-est16x2", "diffres-0.25-est64x3", "16x2 vs 64x3 estimator, same code"),
    ("diffres-0.75-est16x2", "diffres-0.75-est64x3", "16x2 vs 64x3 estimator, same code"),
    ("diffres-0.25-est16x2", "diffres-0.25", "16x2 (today's code) vs the older 64x3 runs"),
    ("diffres-0.75-est16x2", "diffres-0.75", "16x2 (today's code) vs the older 64x3 runs"),
]


def run_dir(out: Path, dataset: str, variant: str) -> Path:
    """Where a variant's finished runs leave seed<k>.json: the record that makes the command resumable."""
    return out / "runs" / dataset / variant


def model_config(v: Variant, sample_rate: int) -> ModelConfig:
    front = FrontendConfig(sample_rate=sample_rate, hop_ms=v.hop_ms, compression=v.compression)
    cfg = ModelConfig(frontend=front, resolution=v.resolution, delta=v.delta)
    if v.estimator:
        cfg.estimator_channels, cfg.estimator_blocks = v.estimator
    return cfg


