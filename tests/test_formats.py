"""The one decoder (diffres/decode.py): what browsers and phones record, streamed FLAC/WAV, and what it refuses.

Every fixture is encoded here, with PyAV, from a real clip of ../shared/data (a synthetic one when the
data is absent), so what is tested is what a recorder would produce, not a committed binary.
"""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from diffres.decode import AudioStream, load_audio, open_audio
from diffres.errors import (
    AudioTooLong,
    NonFiniteAudio,
    TruncatedAudio,
    UndecodableAudio,
)
from tests.av_encode import TARGETS, Target, encode
from tests.conftest import DATA_DIR

pytest.importorskip("av", reason="PyAV (the 'av' package) is not installed: the fallback decoder cannot run")
SR = 16000
# AAC adds up to 1024 priming + 1023 padding samples, Opus/AMR round to their 20 ms frames.
CODEC_SLACK_S = {"m4a": 2048 / 44100, "adts": 2048 / 16000, "mp4-video": 2048 / 16000}


def real_or_synthetic_clip() -> np.ndarray:
    """A real keyword clip at 16 kHz when the data is there, else a syllable-like synthetic one."""
    clips = sorted((DATA_DIR / "keywords" / "jarvis").glob("*.flac"))[:1]
    if clips:
        x, sr = sf.read(clips[0], dtype="float32")
        assert sr == SR
        return x
    t = np.arange(int(1.6 * SR)) / SR
    envelope = np.clip(np.sin(2 * np.pi * 1.5 * t), 0, None) ** 2
    return (0.3 * envelope * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return real_or_synthetic_clip()


def envelope(x: np.ndarray, hop: int = SR // 100) -> np.ndarray:
    n = len(x) // hop
    return np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def best_envelope_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 20) -> float:
    """Correlation of the 10 ms RMS envelopes at the best lag (codecs delay the signal a little)."""
    ea, eb = envelope(a), envelope(b)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (ea[lag:], eb) if lag >= 0 else (ea, eb[-lag:])
        n = min(len(x), len(y))
        best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


@pytest.mark.parametrize("name", list(TARGETS))
def test_recorded_formats_decode_to_the_same_audio(clip: np.ndarray, name: str) -> None:
    data = encode(clip, SR, TARGETS[name])
    with pytest.raises(Exception) as refused:
        sf.info(io.BytesIO(data))  # libsndfile alone would answer 400: the fallback is what reads these
    assert "not recognised" in str(refused.value).lower()
    decoder, info = open_audio(io.BytesIO(data))
    decoder.close()
    assert info.frames is None, "the header is never trusted for the length"
    decoded = load_audio(io.BytesIO(data), SR)
    slack = CODEC_SLACK_S.get(name, 0.02)
    assert len(clip) / SR - 0.02 <= len(decoded) / SR <= len(clip) / SR + slack + 0.005
    assert best_envelope_correlation(clip, decoded) > 0.95


def test_format_names_say_what_was_uploaded(clip: np.ndarray) -> None:
    names = {}
    for name in ("webm", "m4a", "adts", "amr", "mkv-float"):
        decoder, info = open_audio(io.BytesIO(encode(clip, SR, TARGETS[name])))
        decoder.close()
        names[name] = f"{info.format}/{info.subtype}"
    assert names == {"webm": "WEBM/OPUS", "m4a": "MP4/AAC", "adts": "ADTS/AAC", "amr": "AMR/AMRNB",
                     "mkv-float": "MATROSKA/PCM_F32LE"}


def test_stereo_recording_is_mixed_down() -> None:
    av = pytest.importorskip("av")
    t = np.arange(SR) / SR
    left = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([left, np.zeros_like(left)]), format="fltp", layout="stereo")
        frame.sample_rate = SR
        for f in av.AudioResampler(format="flt", layout="stereo", rate=48000).resample(frame):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))
    decoder, info = open_audio(io.BytesIO(buf.getvalue()))
    decoder.close()
    assert info.channels == 2
    mono = load_audio(io.BytesIO(buf.getvalue()), SR)
    assert 0.15 < np.sqrt(np.mean(mono[SR // 10: -SR // 10] ** 2)) * np.sqrt(2) < 0.25  # half the 0.4 sine


def test_browser_webm_without_duration_is_cut_off_at_the_limit_while_decoding() -> None:
    """A MediaRecorder WebM has no duration: 3 s of it against a 1 s limit must fail while decoding."""
    t = np.arange(3 * SR) / SR
    data = encode((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), SR, TARGETS["webm"])
    decoder, info = open_audio(io.BytesIO(data), max_duration_s=1.0)  # nothing to refuse in the header
    stream = AudioStream(decoder, info, SR, max_duration_s=1.0)
    try:
        with pytest.raises(AudioTooLong, match="longer than the 1 s limit"):
            while stream.read() is not None:
                pass
    finally:
        decoder.close()
    assert stream.frames_read <= 1.0 * info.sample_rate + 2 * 65536  # stopped within a block of the limit


def streamed_flac(x: np.ndarray) -> bytes:
    """A valid FLAC whose STREAMINFO says "total samples unknown" (0), as streaming encoders write it."""
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="FLAC")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"fLaC"
    fields = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # low 36 bits: total samples
    data[18:26] = fields.to_bytes(8, "big")
    return bytes(data)


def test_streamed_flac_without_length_decodes_and_the_limit_holds(clip: np.ndarray) -> None:
    """Regression (issue 10): such a FLAC was refused with 413 "576460752303423.5 s"."""
    data = streamed_flac(clip)
    assert sf.info(io.BytesIO(data)).frames > 1 << 62  # what libsndfile makes of it
    decoded = load_audio(io.BytesIO(data), SR, max_duration_s=60)
    assert len(decoded) == len(clip) and np.abs(decoded - clip).max() < 1e-4
    with pytest.raises(AudioTooLong):
        load_audio(io.BytesIO(data), SR, max_duration_s=len(clip) / SR / 2)


def test_wav_written_to_a_pipe_decodes(clip: np.ndarray) -> None:
    """RIFF and data sizes 0xFFFFFFFF mean "unknown" (a WAV streamed to a pipe), not a lying header."""
    buf = io.BytesIO()
    sf.write(buf, clip, SR, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"
    assert len(load_audio(io.BytesIO(bytes(data)), SR)) == len(clip)


def packet_offsets(data: bytes) -> list[int]:
    """Byte offsets of the audio packets: cutting there leaves a file that still parses."""
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(data)) as container:
        return [p.pos for p in container.demux(container.streams.audio[0]) if p.size]


WEBM_FILE = Target("webm-file", "webm", "libopus", 48000)  # written to a file: Duration and Cues
M4A_FASTSTART = Target("m4a-faststart", "ipod", "aac", 44100, {"movflags": "faststart"})  # index in front


@pytest.mark.parametrize("target,where,error", [
    (WEBM_FILE, "packet", TruncatedAudio),  # the header's duration promises more
    (M4A_FASTSTART, "packet", TruncatedAudio),  # the index lists more packets
    (TARGETS["m4a"], 0.6, UndecodableAudio),  # the index at the end is gone
    (TARGETS["adts"], 0.3, UndecodableAudio),
    (TARGETS["amr"], "mid-packet", UndecodableAudio),
], ids=["webm-with-duration", "m4a-faststart", "m4a", "adts", "amr"])
def test_cut_files_are_refused_not_classified_as_a_prefix(clip: np.ndarray, target: Target, where: object,
                                                          error: type[Exception]) -> None:
    data = encode(clip, SR, target)
    assert len(load_audio(io.BytesIO(data), SR)) > 0
    if isinstance(where, float):
        end = int(len(data) * where)
    else:
        offsets = packet_offsets(data)
        end = offsets[len(offsets) * 6 // 10] + (7 if where == "mid-packet" else 0)
    with pytest.raises(error):
        load_audio(io.BytesIO(data[:end]), SR)


def test_non_finite_samples_in_a_fallback_container_are_refused(clip: np.ndarray) -> None:
    x = clip.copy()
    x[len(x) // 2] = np.nan
    with pytest.raises(NonFiniteAudio):
        load_audio(io.BytesIO(encode(x, SR, TARGETS["mkv-float"])), SR)


def video_only() -> bytes:
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")))
        out.mux(video.encode(None))
    return buf.getvalue()


@pytest.mark.parametrize("name,data,message", [
    ("text", b"this is a text file, not audio\n" * 40, "could not decode audio"),
    ("random bytes", np.random.default_rng(1).bytes(20000), "could not decode audio"),
    ("html", b"<!doctype html><html><body>" + b"<p>hello</p>" * 200 + b"</body></html>", "could not decode audio"),
    # FFmpeg's HLS demuxer would open the files a playlist names: only audio containers may probe.
    ("hls playlist", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
     "could not decode audio"),
    ("video without audio", None, "no audio stream"),
])
def test_what_is_not_audio_is_refused(name: str, data: bytes | None, message: str) -> None:
    with pytest.raises(UndecodableAudio, match=message):
        load_audio(io.BytesIO(video_only() if data is None else data), SR)


def test_fallback_decoding_holds_a_block_not_the_file() -> None:
    """Two minutes of WebM/Opus decoded block by block: Python-side peak far below the decoded size."""
    t = np.arange(120 * SR) / SR
    x = (0.2 * np.sin(2 * np.pi * 250 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)
    data = encode(x, SR, TARGETS["webm"])
    decoder, info = open_audio(io.BytesIO(data))
    stream = AudioStream(decoder, info, SR)
    total = 0
    tracemalloc.start()
    try:
        while (block := stream.read()) is not None:
            total += len(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        decoder.close()
    assert abs(total - len(x)) < SR // 50
    decoded_bytes = total * 4
    assert peak < 2 * 1024 * 1024 < decoded_bytes / 3, f"peak {peak / 1e6:.2f} MB for {decoded_bytes / 1e6:.1f} MB"


def test_training_and_the_load_test_decode_with_the_same_function(tmp_path, clip: np.ndarray) -> None:
    """diffres/train/data.py and tools/loadtest/clips.py call diffres.decode.load_audio: a WebM reads the same
    everywhere."""
    import tools.loadtest.clips

    path = tmp_path / "clip.webm"
    path.write_bytes(encode(clip, SR, TARGETS["webm"]))
    assert tools.loadtest.clips.load_audio is load_audio
    pytest.importorskip("torch", reason="diffres/train/data.py needs torch")
    import diffres.train.data

    assert diffres.train.data.load_audio is load_audio
    np.testing.assert_array_equal(diffres.train.data.load_audio(str(path), SR), load_audio(path, SR))


def test_ima_adpcm_wav_goes_to_ffmpeg_not_libsndfile(tmp_path) -> None:
    """libsndfile 1.2.2 mis-parses IMA ADPCM WAV headers (CVE-2026-37555): FFmpeg decodes them, identically."""
    from diffres.decode import IMA_ADPCM, wav_format_tag

    x = (0.3 * np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440)).astype(np.float32)
    path = tmp_path / "ima.wav"
    sf.write(path, x, 8000, format="WAV", subtype="IMA_ADPCM")
    assert wav_format_tag(path.read_bytes()[:4096]) == IMA_ADPCM
    decoder, info = open_audio(path)
    decoder.close()
    assert type(decoder).__name__ == "FfmpegDecoder" and info.format == "WAV"
    reference, _ = sf.read(path, dtype="float32")  # libsndfile, in the test only
    np.testing.assert_array_equal(load_audio(path, 8000), reference)
    pcm = tmp_path / "pcm.wav"
    sf.write(pcm, x, 8000, subtype="PCM_16")
    assert wav_format_tag(pcm.read_bytes()[:4096]) == 1  # plain PCM stays with libsndfile
