"""The Python API (diffres.Classifier) on the committed sample recordings: inputs, batching, streaming, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import diffres
from diffres.errors import InvalidParameters, ModelNotFound, UndecodableAudio
from diffres.schemas import ClassifyResult
from tests.conftest import EXAMPLES, without_timing


@pytest.fixture(scope="module")
def clf() -> diffres.Classifier:
    return diffres.Classifier.load("keywords")


def test_shipped_models_are_listed_and_load_by_name_or_path() -> None:
    assert diffres.available_models() == ["digits", "keywords"]
    from diffres.models import MODELS_DIR

    by_path = diffres.Classifier.load(MODELS_DIR / "digits.onnx", threads=1)
    assert by_path.info.name == "digits" and by_path.info.sample_rate == 8000
    with pytest.raises(ModelNotFound, match="shipped: digits, keywords"):
        diffres.Classifier.load("nope")


def test_a_path_bytes_a_file_and_samples_give_one_answer(clf: diffres.Classifier) -> None:
    path = EXAMPLES / "alexa.flac"
    by_path = clf.classify(path)
    assert by_path.predictions[0].label == "alexa" and [e.label for e in by_path.events or []] == ["alexa"]
    with path.open("rb") as f:
        by_file = clf.classify(f)
    by_bytes = clf.classify(path.read_bytes())
    for other in (by_file, by_bytes):
        assert without_timing(other) == without_timing(by_path)
    samples, sr = sf.read(path, dtype="float32")
    by_array = clf.classify(samples, sr)
    assert by_array.format == "RAW/FLOAT" and by_array.events == by_path.events
    assert by_array.predictions == by_path.predictions
    stereo = clf.classify(np.stack([samples, samples], axis=1), sr)  # channels are mixed to mono
    assert stereo.channels == 2 and stereo.predictions[0].label == "alexa"


def test_a_long_recording_is_windowed_with_events_in_order(clf: diffres.Classifier) -> None:
    result = clf.classify(EXAMPLES / "long.flac")
    assert result.windowing is not None and result.segments and len(result.segments) == result.windowing.windows
    events = result.events or []
    assert {"computer", "jarvis"} <= {e.label for e in events}
    for label in {e.label for e in events}:  # settled in order: one label's events never go back in time
        starts = [e.start_s for e in events if e.label == label]
        assert starts == sorted(starts)
    assert clf.classify(EXAMPLES / "alexa.flac").segments is None  # a clip that fits runs whole: no segments


def test_classify_many_shares_session_calls_and_answers_as_one_by_one(clf: diffres.Classifier,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    files = [EXAMPLES / name for name in ("alexa.flac", "long.flac", "computer.flac", "three.wav")]
    alone = [clf.classify(f) for f in files]
    calls: list[list[int]] = []
    run = clf.model.run
    monkeypatch.setattr(clf.model, "run", lambda rows, outputs, pad_to=0: calls.append([len(r) for r in rows])
                        or run(rows, outputs, pad_to))
    together = clf.classify_many(files)
    assert [without_timing(r) for r in together] == [without_timing(r) for r in alone]
    assert any(len(set(lengths)) > 1 for lengths in calls), "rows of different lengths never shared a call"
    assert all(len(lengths) <= clf.batch_size for lengths in calls)


def test_the_stream_gives_the_events_of_the_upload(clf: diffres.Classifier) -> None:
    samples, sr = sf.read(EXAMPLES / "long.flac", dtype="float32")
    chunks = [samples[i:i + sr // 10] for i in range(0, len(samples), sr // 10)]
    streamed = list(clf.stream(chunks, sr))
    assert streamed == clf.classify(EXAMPLES / "long.flac").events
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    as_bytes = list(clf.stream([pcm[i:i + 3201] for i in range(0, len(pcm), 3201)], sr))  # odd sizes: split samples
    assert [e.label for e in as_bytes] == [e.label for e in streamed]


def test_the_result_is_the_rest_json_and_parses_back(clf: diffres.Classifier) -> None:
    result = clf.classify(EXAMPLES / "computer.flac", include_importance=True, top_k=2)
    data = result.to_json()
    assert "segments" not in data and len(data["predictions"]) == 2 and data["importance_hop_s"] == 0.01
    assert ClassifyResult.model_validate(data) == result


def test_progress_is_reported_while_long_audio_decodes(clf: diffres.Classifier) -> None:
    seen: list[tuple[float, float | None]] = []
    clf.classify(EXAMPLES / "long.flac", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (30.0, 30.0) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_bad_input_raises_the_service_errors(clf: diffres.Classifier) -> None:
    with pytest.raises(UndecodableAudio) as bad:
        clf.classify(b"this is not audio")
    assert bad.value.code == "invalid_audio" and bad.value.status == 400
    with pytest.raises(InvalidParameters, match="unknown labels"):
        clf.classify(EXAMPLES / "alexa.flac", thresholds={"nope": 0.5})
    with pytest.raises(InvalidParameters, match="sample_rate"):
        clf.classify(np.zeros(16000, np.float32))
    with pytest.raises(InvalidParameters, match="top_k"):
        clf.classify(EXAMPLES / "alexa.flac", top_k=0)


def test_the_digits_model_reads_its_sample(tmp_path: Path) -> None:
    digits = diffres.Classifier.load("digits", threads=1)
    result = digits.classify(EXAMPLES / "three.wav")
    assert result.predictions[0].label == "3" and result.sample_rate == 8000
    buffer = io.BytesIO()
    sf.write(buffer, sf.read(EXAMPLES / "three.wav", dtype="float32")[0], 8000, format="FLAC")
    assert digits.classify(buffer.getvalue()).predictions[0].label == "3"
