"""One dataclass config for the model and one for training; both travel inside checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from diffres.contract import (changehop_hop_ms, delta_fraction, frames_in,  # noqa: F401 (re-exported)
                              frames_out, hop_samples)

ResolutionKind = Literal["diffres", "full", "avgpool", "avgmaxpool", "changehop"]
CompressionKind = Literal["log", "loglearn", "pcen"]


@dataclass
class FrontendConfig:
    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = None  # None: Nyquist
    compression: CompressionKind = "log"
    log_eps: float = 1e-6

    @property
    def win_length(self) -> int:
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def hop_length(self) -> int:
        return hop_samples(self.sample_rate, self.hop_ms)

    @property
    def f_max(self) -> float:
        return self.fmax if self.fmax is not None else self.sample_rate / 2


@dataclass
class ModelConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    resolution: ResolutionKind = "diffres"
    delta: float = 0.5  # share of frames removed: t = T - floor(delta * T)
    n_classes: int = 2
    # DiffRes's importance CNN: 16 channels x 2 dilated blocks. 64 x 3 learnt no better (compare,
    # reports/compare/RESULTS.md) and cost a tenth more than fixed pooling (BENCHMARKS.md, 1b and 1c).
    estimator_channels: int = 16
    estimator_blocks: int = 2
    backbone_width: int = 32
    dropout: float = 0.2
    clip_norm: bool = False  # subtract each clip's mean log-mel per bin (removes microphone/channel colour)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["frontend"] = FrontendConfig(**d["frontend"])
        return cls(**d)


@dataclass
class TrainConfig:
    data: str = ""
    out: str = "runs/model"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 1
    seed: int = 0
    val_fraction: float = 0.15
    clip_seconds: float | None = None  # None: 95th percentile of training clip lengths
    holdout_speaker: str | None = None  # None: chosen by seed when file names carry speakers
    guide_loss_weight: float = 1.0
    time_masks: int = 2
    time_mask_ratio: float = 0.1
    freq_masks: int = 2
    freq_mask_bins: int = 8
    speed_perturb: tuple[float, ...] = (0.85, 0.92, 1.0, 1.08, 1.15)  # resampled copies of each training clip
    gain_db: float = 12.0  # random gain, uniform in +-gain_db
    threads: int = 0  # 0: torch default
    negatives: tuple[str, ...] = ()  # folders of non-target audio for the background label
    background_class: bool = False  # train a background label (always on when `negatives` names folders)
    background_holdout_speaker: str | None = None  # None: chosen by seed when file names carry speakers
    background_share: float = 2.0  # background examples per epoch, in units of an average label's clips
    mix_probability: float = 0.5  # share of training clips mixed with background material
    mix_snr_db: tuple[float, ...] = (0.0, 20.0)  # SNR range of that mixing
    mix_sources: int = 1  # background crops summed into one mix, at most (2+: several talkers at once)
    rooms: int = 0  # reverberated versions of each training clip (simulated rooms), besides the speed versions
    context_probability: float = 0.0  # share of keyword windows with other sound right before or after the word
    partial_share: float = 0.0  # windows holding part of a word, as background, per keyword window
    long_window_probability: float = 0.0  # share of keyword windows up to 3x as long (such clips run whole)
    synthetic_positives: str | None = None  # a synth folder whose keyword positives join the training clips
    mine_rounds: int = 0  # hard-negative mining rounds after the epochs
    mine_hours: float = 1.0  # of training negatives streamed per round
    mine_epochs: int = 4  # epochs of training on with the mined windows, per round
    mine_probability: float = 0.3  # a window is mined when a keyword reaches this probability
    event_hops: tuple[float, ...] = ()  # window hops (s) the event rule is chosen among; () : half the window
    event_windows_max: int = 3  # the most windows a label may be asked to hold
    event_latency_s: float = 0.75  # the rule's expected delay from a word's end to its event, at most
    event_false_alarms_per_hour: float = 2.0  # on held-out validation speech alone, at most (when a rule can)
    event_near_miss_per_hour: float | None = None  # on held-out near-miss phrases alone, at most; None: no bound
    event_snr_db: tuple[float, ...] = (10.0,)  # SNRs of the validation keywords in speech and noise

    @property
    def with_background(self) -> bool:
        return self.background_class or bool(self.negatives)
