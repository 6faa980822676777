"""The answer's types: what `Classifier.classify`, `Client.classify` and the REST API all return.

They are the public JSON contract: the service serialises these models, the client parses its
answers back into them, and `result.to_json()` is the REST JSON for the same audio and options.
Pydantic only, so every layer may import them.

Precision: probabilities and scores are rounded to 6 decimals, event and window bounds to 3
(milliseconds), durations to 6, `frames.reduction` to 4, importance to 5, log-mel values to 2,
timings to 3 (microseconds of a millisecond figure). Rounding happens when a value enters these
types, so every door gives the same digits.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from diffres.contract import MAX_WORD_S

SCORE_DECIMALS, SECONDS_DECIMALS, DURATION_DECIMALS, SHARE_DECIMALS = 6, 3, 6, 4


def _rounded(decimals: int) -> AfterValidator:
    return AfterValidator(lambda value: round(value, decimals))


Score = Annotated[float, _rounded(SCORE_DECIMALS)]
Seconds = Annotated[float, _rounded(SECONDS_DECIMALS)]
Duration = Annotated[float, _rounded(DURATION_DECIMALS)]
Share = Annotated[float, _rounded(SHARE_DECIMALS)]


class Prediction(BaseModel):
    """One label, its probability, and whether that reached the label's event threshold."""

    label: str
    score: Score = Field(description="Softmax probability (clip level of windowed audio: the best window's; "
                                     "for the background label the lowest window's), 6 decimals")
    passed: bool = Field(description="The score reached this label's event threshold (min_score, or its own in "
                                     "`thresholds`); always false for the background label, which never makes "
                                     "events")


class Frames(BaseModel):
    """How many spectrogram frames DiffRes kept."""

    input: int = Field(description="Spectrogram frames entering DiffRes (sum over windows)")
    output: int = Field(description="Frames the classifier saw after DiffRes (sum over windows)")
    reduction: Share = Field(description="1 - output / input, 4 decimals")

    @classmethod
    def of(cls, frames_in: int, frames_out: int) -> Frames:
        return cls(input=frames_in, output=frames_out, reduction=1 - frames_out / frames_in if frames_in else 0.0)


class Timing(BaseModel):
    """Where the time of one answer went, in milliseconds."""

    decode: float = Field(description="ms spent decoding and resampling")
    inference: float = Field(description="ms spent waiting for model results (queue + session)")
    total: float = Field(description="ms from the start of the request to the response")


class Segment(BaseModel):
    """One window of windowed audio and its own top labels."""

    start_s: Seconds
    end_s: Seconds
    predictions: list[Prediction] = Field(description="This window's top-k labels, best first")
    frames: Frames


class Windowing(BaseModel):
    """How long audio was cut: window length, hop, count, and how windows became the clip's answer."""

    window_s: float
    hop_s: float
    windows: int
    aggregation: Literal["max_probability"] = "max_probability"


class Event(BaseModel):
    """A detected sound: consecutive windows firing for one label, bounds refined with DiffRes importance."""

    label: str
    start_s: Seconds = Field(description="Onset, seconds from the start of the audio (3 decimals)")
    end_s: Seconds = Field(description="Offset, seconds from the start of the audio (3 decimals)")
    score: Score = Field(description="Best probability of the label over the windows that made the event")


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


class ClassifyResult(BaseModel):
    """The answer for one recording: clip-level labels, events, and (for long audio) its windows."""

    model: str
    model_version: str
    repository_version: int = Field(1, description="The model repository's version that answered (1: a flat "
                                                   "NAME.onnx, and the in-process Classifier)")
    duration_s: Duration = Field(description="Duration of the audio")
    sample_rate: int = Field(description="Sample rate of the audio as sent (the model's may differ)")
    channels: int
    format: str
    detected: bool = Field(description="At least one event: some label's window reached its threshold; false "
                                       "means nothing was detected above the threshold")
    min_score: float = Field(description="The event threshold in effect (the request's min_score, else the "
                                         "model's); labels named in `thresholds` use their own")
    predictions: list[Prediction] = Field(description="Top-k labels, best first, clip level: each label's best "
                                                      "window score (the background label's lowest)")
    frames: Frames
    timing_ms: Timing
    segments: list[Segment] | None = Field(None, description="Per-window results when the audio was windowed "
                                                             "(left out with include_segments=false)")
    windowing: Windowing | None = None
    importance: list[float] | None = Field(None, description="Per-frame DiffRes importance (include_importance)")
    importance_hop_s: float | None = Field(None, description="Seconds between importance frames")
    spectrogram: Spectrogram | None = Field(
        None, description="Log-mel, importance and merged frames (include_spectrogram; clips that are not windowed)")
    events: list[Event] | None = Field(
        None, description="Detected sounds in the order they were settled (time order, except that overlapping "
                          "events of different labels may swap): windows whose best non-background label reaches "
                          "its threshold (min_score / thresholds), consecutive ones of one label merged")
    warnings: list[str] | None = None

    def to_json(self) -> dict[str, object]:
        """The REST API's JSON for this answer (fields that are None left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    """One file of a batch: its answer, or its own error."""

    index: int
    filename: str | None
    status: int = Field(description="HTTP status this file alone would have got")
    result: ClassifyResult | None = None
    error: ErrorDetail | None = None


class BatchResult(BaseModel):
    """Answers for several files, in the order they were sent."""

    model: str
    results: list[BatchItem]
    timing_ms: Timing


class VersionState(BaseModel):
    """One version of a model in the repository (docs/repository.md)."""

    version: int
    state: Literal["READY", "LOADING", "UNLOADING", "UNAVAILABLE"] = Field(
        description="READY: serving; LOADING: being loaded and checked; UNLOADING: out of service, requests and "
                    "streams that began on it finishing; UNAVAILABLE: not loaded (`reason` says why)")
    reason: str = ""
    model_version: str | None = Field(None, description="Build identity of the loaded file (READY, UNLOADING)")


class ModelDescription(BaseModel):
    """A model as the service or a Classifier serves it: labels, audio settings, windows, thresholds."""

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
    event_windows: int = Field(1, description="Consecutive windows (window_hop_s apart) a label must hold to make "
                                              "an event, chosen on validation data at training time")
    max_word_s: float = Field(MAX_WORD_S, description="An event's onset is searched at most this far before its "
                                                      "end (the longest word expected), chosen on validation data "
                                                      "at training time")
    repository_version: int = Field(1, description="The repository version described (the one requests without "
                                                   "a version get: the highest ready one)")
    versions: list[VersionState] = Field(default_factory=list, description="Every version of the model in the "
                                                                          "repository, with its state")



class ModelList(BaseModel):
    models: list[ModelDescription]
    default_model: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: list[str]
    failed: dict[str, str] = {}


class StreamReady(BaseModel):
    """First message of a stream: the model, its labels and thresholds, the window plan."""

    type: Literal["ready"] = "ready"
    model: str
    model_version: str
    repository_version: int = Field(1, description="The repository version serving the whole stream")
    labels: list[str]
    background_label: str
    sample_rate: int = Field(description="The model's rate (the stream's PCM is resampled to it)")
    thresholds: dict[str, float]
    window_s: float
    hop_s: float


class StreamEvent(BaseModel):
    """`onset`: an event began (window bounds, early notice); `event`: an event is over, final bounds."""

    type: Literal["onset", "event"]
    label: str
    start_s: Seconds
    end_s: Seconds
    score: Score
    stream_s: Seconds = Field(description="Seconds of audio received when the message was sent")


class StreamWindow(BaseModel):
    """One classified window (with windows=true)."""

    type: Literal["window"] = "window"
    start_s: Seconds
    end_s: Seconds
    predictions: list[Prediction]


class StreamEnd(BaseModel):
    """Last message: the stream's totals and clip-level labels."""

    type: Literal["end"] = "end"
    duration_s: Duration
    windows: int
    events: int
    detected: bool = Field(description="At least one event in the whole stream")
    predictions: list[Prediction]


StreamMessage = StreamReady | StreamEvent | StreamWindow | StreamEnd
