"""The ONNX contract: input/output names and dtypes, metadata keys, and the frame arithmetic.

Standard library only: the model (torch), the exporter and the torch-free runtime all import it,
so a shape rule written here is the one every side uses.

Graph (contract version 4; version 3 lacked max_word_s, version 2 also window_hop_s and event_windows):
  inputs   waveform   float32 [batch, samples]  rows zero-padded to the longest
           lengths    int64   [batch]           valid samples per row (row i runs as if alone)
  outputs  logits     float32 [batch, classes]
           importance float32 [batch, frames]   DiffRes scores, 0 beyond a row's frames
           frames_in  int64   [batch]           frames at the configured hop: lengths // hop + 1
           frames_out int64   [batch]           frames the backbone saw: T - floor(delta * T)
           logmel     float32 [batch, frames, n_mels]  the frontend's log-mel, 0 beyond a row's frames
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction

CONTRACT_VERSION = "4"

WAVEFORM = "waveform"
LENGTHS = "lengths"
INPUTS = (WAVEFORM, LENGTHS)

LOGITS = "logits"
IMPORTANCE = "importance"
FRAMES_IN = "frames_in"
FRAMES_OUT = "frames_out"
LOGMEL = "logmel"
OUTPUTS = (LOGITS, IMPORTANCE, FRAMES_IN, FRAMES_OUT, LOGMEL)

# OIP v2 / Triton datatype of each tensor.
DATATYPES = {WAVEFORM: "FP32", LENGTHS: "INT64", LOGITS: "FP32", IMPORTANCE: "FP32",
             FRAMES_IN: "INT64", FRAMES_OUT: "INT64", LOGMEL: "FP32"}

RESOLUTIONS = ("diffres", "full", "avgpool", "avgmaxpool", "changehop")
# Metadata the exporter always writes; a model without one of them is refused, never given defaults.
# background_label: the label meaning "no target sound" ("" when the model has none); min_score: the
# default event threshold; window_hop_s: how far apart long audio's windows start; event_windows: how
# many consecutive windows a label must hold to be an event; max_word_s: how far before an event's end
# its onset is searched (the longest word expected). The last four are chosen on validation data at
# training time (diffres/events.py says how they are used).
METADATA_KEYS = ("contract", "labels", "sample_rate", "delta", "hop_ms", "win_ms", "n_mels",
                 "clip_seconds", "frontend", "resolution", "version", "background_label", "min_score",
                 "window_hop_s", "event_windows", "max_word_s")

# The event rule's onset search when training chose none (a model calibrated without recordings).
MAX_WORD_S = 1.5

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000


class ContractError(ValueError):
    """A model file that does not follow this contract (missing or malformed metadata, wrong tensors)."""


def delta_fraction(delta: float) -> Fraction:
    """delta as an exact fraction, so frame counts use integer arithmetic (stays symbolic in ONNX)."""
    return Fraction(delta).limit_denominator(1000)


def frames_out(n_frames: int, delta: Fraction) -> int:
    """t = T - floor(delta * T) in integer arithmetic (a float-to-int size would freeze in ONNX).

    Works unchanged on integer tensors (torch or numpy) as well as on ints.
    """
    return n_frames - (n_frames * delta.numerator) // delta.denominator


def hop_samples(sample_rate: int, hop_ms: float) -> int:
    """Samples per frame hop."""
    return round(sample_rate * hop_ms / 1000)


def frames_in(n_samples: int, hop: int) -> int:
    """Frames of a centred STFT over n samples: T = n // hop + 1 (also on integer tensors)."""
    return n_samples // hop + 1


def changehop_hop_ms(hop_ms: float, delta: float) -> float:
    """ChangeHopSize's frontend hop: hop / (1 - delta)."""
    return hop_ms / (1.0 - delta)


@dataclass(frozen=True)
class ModelInfo:
    """An exported model's metadata_props, parsed strictly."""

    name: str
    labels: tuple[str, ...]
    sample_rate: int
    delta: float
    hop_ms: float
    win_ms: float
    n_mels: int
    clip_seconds: float
    frontend: str
    resolution: str
    version: str
    background_label: str = ""  # "" when the model has no background class
    min_score: float = 0.5
    window_hop_s: float = 0.0  # 0: half the window (clip_seconds / 2)
    event_windows: int = 1
    max_word_s: float = MAX_WORD_S

    @property
    def background_index(self) -> int | None:
        """Index of the background label among the logits, None when the model has none."""
        return self.labels.index(self.background_label) if self.background_label else None

    @property
    def hop(self) -> int:
        return hop_samples(self.sample_rate, self.hop_ms)

    @property
    def backbone_hop(self) -> int:
        """Samples per frame the graph's frontend really uses (ChangeHopSize's is longer)."""
        if self.resolution == "changehop":
            return hop_samples(self.sample_rate, changehop_hop_ms(self.hop_ms, self.delta))
        return self.hop

    def frames_in(self, n_samples: int) -> int:
        return frames_in(n_samples, self.hop)

    def frames_out(self, n_samples: int) -> int:
        """What the backbone sees for a row of n samples, for every resolution kind."""
        if self.resolution == "changehop":
            return frames_in(n_samples, self.backbone_hop)
        n = frames_in(n_samples, self.hop)
        return n if self.resolution == "full" else frames_out(n, delta_fraction(self.delta))

    @classmethod
    def from_metadata(cls, name: str, meta: dict[str, str]) -> ModelInfo:
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            raise ContractError(f"model '{name}': metadata lacks {', '.join(missing)} "
                                f"(re-export it with `diffres export`)")
        if meta["contract"] != CONTRACT_VERSION:
            raise ContractError(f"model '{name}': contract version {meta['contract']!r}, this runtime "
                                f"serves {CONTRACT_VERSION!r} (re-export it with `diffres export`; without its "
                                "checkpoint, `python -m diffres.train.recover` rebuilds one from the graph)")
        try:
            labels = json.loads(meta["labels"])
            info = cls(name=name, labels=tuple(labels), sample_rate=int(meta["sample_rate"]),
                       delta=float(meta["delta"]), hop_ms=float(meta["hop_ms"]), win_ms=float(meta["win_ms"]),
                       n_mels=int(meta["n_mels"]), clip_seconds=float(meta["clip_seconds"]),
                       frontend=meta["frontend"], resolution=meta["resolution"], version=meta["version"],
                       background_label=meta["background_label"], min_score=float(meta["min_score"]),
                       window_hop_s=float(meta["window_hop_s"]), event_windows=int(meta["event_windows"]),
                       max_word_s=float(meta["max_word_s"]))
        except (TypeError, ValueError) as exc:
            raise ContractError(f"model '{name}': malformed metadata: {exc}") from exc
        info.check()
        return info

    def check(self) -> None:
        def fail(why: str) -> None:
            raise ContractError(f"model '{self.name}': {why}")

        if not self.labels or not all(isinstance(x, str) and x for x in self.labels):
            fail("'labels' must be a non-empty JSON list of strings")
        if len(set(self.labels)) != len(self.labels):
            fail("'labels' has duplicates")
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            fail(f"sample_rate {self.sample_rate} out of range")
        if not 0.0 <= self.delta < 1.0:
            fail(f"delta {self.delta} outside [0, 1)")
        for key in ("hop_ms", "win_ms", "clip_seconds"):
            value = getattr(self, key)
            if not math.isfinite(value) or value <= 0:
                fail(f"'{key}' must be a positive number, got {value}")
        if self.n_mels < 1:
            fail(f"n_mels {self.n_mels} < 1")
        if self.resolution not in RESOLUTIONS:
            fail(f"unknown resolution {self.resolution!r} (known: {', '.join(RESOLUTIONS)})")
        if self.hop < 1:
            fail("hop shorter than one sample")
        if self.background_label and self.background_label not in self.labels:
            fail(f"background_label {self.background_label!r} is not one of the labels")
        if not 0.0 <= self.min_score <= 1.0:
            fail(f"min_score {self.min_score} outside [0, 1]")
        if not 0.0 < self.window_hop_s <= self.clip_seconds:
            fail(f"window_hop_s {self.window_hop_s} outside (0, clip_seconds]")
        if self.event_windows < 1:
            fail(f"event_windows {self.event_windows} < 1")
        if not (math.isfinite(self.max_word_s) and self.max_word_s > 0):
            fail(f"max_word_s must be a positive number, got {self.max_word_s}")

    def to_metadata(self) -> dict[str, str]:
        """The metadata_props the exporter writes (inverse of from_metadata)."""
        return {"contract": CONTRACT_VERSION, "labels": json.dumps(list(self.labels)),
                "sample_rate": str(self.sample_rate), "delta": str(self.delta), "hop_ms": str(self.hop_ms),
                "win_ms": str(self.win_ms), "n_mels": str(self.n_mels), "clip_seconds": str(self.clip_seconds),
                "frontend": self.frontend, "resolution": self.resolution, "version": self.version,
                "background_label": self.background_label, "min_score": str(self.min_score),
                "window_hop_s": str(self.window_hop_s), "event_windows": str(self.event_windows),
                "max_word_s": str(self.max_word_s)}
