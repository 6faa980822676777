"""Response bodies: the public JSON contract, with the field names the API promises."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str
    score: float = Field(description="Softmax probability (clip level of windowed audio: the best window's; "
                                     "for the background label the lowest window's)")


class Frames(BaseModel):
    input: int = Field(description="Spectrogram frames entering DiffRes (sum over windows)")
    output: int = Field(description="Frames the classifier saw after DiffRes (sum over windows)")
    reduction: float = Field(description="1 - output / input")

    @classmethod
    def of(cls, frames_in: int, frames_out: int) -> Frames:
        return cls(input=frames_in, output=frames_out, reduction=1 - frames_out / frames_in if frames_in else 0.0)


class Timing(BaseModel):
    decode: float = Field(description="ms spent decoding and resampling")
    inference: float = Field(description="ms spent waiting for model results (queue + session)")
    total: float = Field(description="ms from the start of the request to the response")


class Segment(BaseModel):
    start_s: float
    end_s: float
    predictions: list[Prediction]
    frames: Frames


class Windowing(BaseModel):
    window_s: float
    hop_s: float
    windows: int
    aggregation: Literal["max_probability"] = "max_probability"


class EventOut(BaseModel):
    """A detected sound: consecutive windows firing for one label, bounds refined with DiffRes importance."""

    label: str
    start_s: float = Field(description="Onset, seconds from the start of the audio")
    end_s: float = Field(description="Offset, seconds from the start of the audio")
    score: float = Field(description="Best probability of the label over the event's windows")

    @classmethod
    def of(cls, event: object) -> EventOut:
        """From a runtime.events.Event."""
        return cls(**{k: getattr(event, k) for k in ("label", "start_s", "end_s", "score")})


class Spectrogram(BaseModel):
    """What the model saw of a clip (include_spectrogram): its log-mel, the importance, the merged frames."""

    hop_s: float = Field(description="Seconds between input frames (log-mel rows and importance values)")
    logmel: list[list[float]] = Field(description="The model's log-mel spectrogram, [frames][n_mels], low bands first")
    importance: list[float] = Field(
        description="DiffRes importance per input frame: at most 1 (1 = kept at full resolution), sums to the "
                    "number of frames the classifier saw")
    boundaries: list[float] = Field(
        description="Where merged frame k starts, in input frames (fractional; frame i covers [c_(i-1), c_i) of "
                    "the cumulative importance c, merged frame k covers [k, k+1)); one more value: the end")
    merged: list[list[float]] = Field(
        description="What the classifier saw, [merged frames][n_mels]: the log of the overlap-weighted mean mel "
                    "power of the frames each merged frame covers (the model's averaged channel)")


class ClassifyResponse(BaseModel):
    model: str
    model_version: str
    duration_s: float = Field(description="Duration of the uploaded audio")
    sample_rate: int = Field(description="Sample rate of the upload (the model's may differ)")
    channels: int
    format: str
    predictions: list[Prediction] = Field(description="Top-k labels, best first, clip level")
    frames: Frames
    timing_ms: Timing
    segments: list[Segment] | None = Field(None, description="Per-window results when the audio was windowed")
    windowing: Windowing | None = None
    importance: list[float] | None = Field(None, description="Per-frame DiffRes importance (include_importance)")
    importance_hop_s: float | None = Field(None, description="Seconds between importance frames")
    spectrogram: Spectrogram | None = Field(
        None, description="Log-mel, importance and merged frames (include_spectrogram; clips that are not windowed)")
    events: list[EventOut] | None = Field(
        None, description="Detected sounds in time order: windows whose best non-background label reaches its "
                          "threshold (min_score / thresholds), consecutive ones of one label merged")
    warnings: list[str] | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    index: int
    filename: str | None
    status: int = Field(description="HTTP status this file alone would have got")
    result: ClassifyResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    model: str
    results: list[BatchItem]
    timing_ms: Timing


class ModelDescription(BaseModel):
    name: str
    labels: list[str]
    sample_rate: int
    delta: float | None
    version: str
    clip_seconds: float
    hop_ms: float
    win_ms: float
    n_mels: int | None
    frontend: str | None
    resolution: str | None
    default: bool
    window_s: float
    window_hop_s: float
    long_audio_s: float
    background_label: str = Field("", description="The label meaning \"nothing here\" (never an event); \"\": none")
    min_score: float = Field(0.5, description="Default event threshold, chosen on validation data at training time")


class ModelList(BaseModel):
    models: list[ModelDescription]
    default_model: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: list[str]
    failed: dict[str, str] = {}
