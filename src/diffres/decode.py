"""The one decoder: open, check, decode in blocks, mix down and resample.

The pipeline (so the service, the Python API and the CLI), training (diffres/train/data.py), parity
and the load test all decode through here, so what one accepts the others accept, sample for
sample. libsndfile (soundfile) reads what it knows: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...;
what it does not recognise goes to FFmpeg through PyAV (diffres/ffmpeg.py): WebM/Opus,
MP4/M4A/AAC, ADTS AAC, AMR, video containers. Either way the
audio is read one block at a time and resampled with soxr's streaming resampler, so a one-hour file
is never held in memory, and the duration limit is enforced while decoding, not from a header.
Errors are diffres.errors' AudioError classes.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import numpy as np
import soundfile as sf
import soxr

from diffres.contract import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from diffres.errors import (
    AudioTooLong,
    EmptyAudio,
    NonFiniteAudio,
    OutOfRangeAudio,
    TruncatedAudio,
    UndecodableAudio,
    UnsupportedSampleRate,
)

BLOCK_SAMPLES = 1 << 16  # per read, across all channels: bounds memory whatever the channel count
MAX_ABS_SAMPLE = 1e4  # 80 dB over full scale; the model's float32 spectrum overflows near 1e19
MP3_FRAME = 1152  # MP3 lengths without a Xing/LAME header are estimates: allow this much slack
UNKNOWN_LENGTH = 1 << 62  # libsndfile reports "length unknown" (streamed FLAC) as SF_COUNT_MAX
STREAMED_SIZE = 0xFFFFFFFF  # a WAV written to a pipe: "size unknown"; libsndfile reads to the end
SF_ERR_UNRECOGNISED_FORMAT = 1  # only this libsndfile error sends a file on to FFmpeg

# libsndfile reads what it can of a damaged file and only says so in its log: "data : 64000 (should
# be 31978)" when a WAV/AIFF header claims more than the file holds, and these for a cut-off Ogg stream.
_DATA_MISMATCH = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_DAMAGED = ("File ended unexpectedly", "Junk after the last page")

AudioSource = BinaryIO | str | os.PathLike[str]


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about the audio; `frames` is None when it does not say (browser WebM)."""

    sample_rate: int
    channels: int
    frames: int | None
    format: str
    subtype: str

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


class Decoder(Protocol):
    """A container being decoded: interleaved float32 blocks [frames, channels] until an empty one."""

    info: AudioInfo

    def read(self, frames: int) -> np.ndarray: ...

    def check_complete(self, frames_read: int) -> None: ...

    def close(self) -> None: ...


def _libsndfile_message(exc: Exception) -> str:
    return getattr(exc, "error_string", None) or str(exc)


class SoundfileDecoder:
    """libsndfile: fast, native streaming for the formats it knows."""

    def __init__(self, snd: sf.SoundFile) -> None:
        self._snd = snd
        self.info = AudioInfo(snd.samplerate, snd.channels, snd.frames, snd.format, snd.subtype)

    def read(self, frames: int) -> np.ndarray:
        try:
            return self._snd.read(frames, dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile raises several types for damaged data
            raise UndecodableAudio(f"could not decode audio: {_libsndfile_message(exc)}") from exc

    def check_damage(self) -> None:
        """What libsndfile only logs: a header claiming more data than the file holds, a cut-off Ogg."""
        log = self._snd.extra_info or ""
        mismatch = _DATA_MISMATCH.search(log)
        declared, present = (int(mismatch.group(1)), int(mismatch.group(2))) if mismatch else (0, 0)
        if declared > present and declared != STREAMED_SIZE:
            raise TruncatedAudio(f"truncated or corrupt file: header declares {declared} bytes of audio "
                                 f"data, the file holds {present}")
        damage = next((marker for marker in _DAMAGED if marker in log), None)
        if damage:
            raise TruncatedAudio(f"truncated or corrupt file: {damage.lower()}")

    def check_complete(self, frames_read: int) -> None:
        """Refuse to classify a prefix: a file that ends before its header says is an error, not a shorter clip."""
        expected = self.info.frames or 0
        slack = max(2 * MP3_FRAME, expected // 50) if self.info.format == "MP3" else 0
        if expected > 0 and frames_read < expected - slack:
            raise TruncatedAudio(f"truncated or corrupt file: header declares {expected} frames, "
                                 f"only {frames_read} could be decoded")

    def close(self) -> None:
        self._snd.close()


def _open_soundfile(source: AudioSource) -> sf.SoundFile:
    """libsndfile on a path, a real file's descriptor (native reads) or an in-memory file (callbacks)."""
    if isinstance(source, (str, os.PathLike)):
        return sf.SoundFile(source)
    try:
        source.flush()  # libsndfile reads the descriptor directly, past Python's buffer
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):
        return sf.SoundFile(source)
    return sf.SoundFile(fd, closefd=False)


def _check_header(info: AudioInfo, max_duration_s: float) -> None:
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedSampleRate(f"unsupported sample rate {info.sample_rate} Hz "
                                    f"(accepted: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    if info.channels < 1:
        raise UndecodableAudio("audio has no channels")
    # An honest header over the limit is refused before any work; a missing one is checked while decoding.
    if info.duration_s is not None and info.duration_s > max_duration_s:
        raise AudioTooLong(f"audio is {info.duration_s:.1f} s long; the limit is {max_duration_s:g} s")


def preload_ffmpeg() -> None:
    """Load PyAV/FFmpeg now (about 0.1 s), so a service's first WebM or M4A upload does not wait for it."""
    import diffres.ffmpeg  # noqa: F401 - imported for its side effect: the libraries are loaded


IMA_ADPCM = 0x0011
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def wav_format_tag(head: bytes) -> int | None:
    """The format tag of a RIFF/RF64 WAVE header (the sub-format's for WAVE_FORMAT_EXTENSIBLE), or None."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos: pos + 4], int.from_bytes(head[pos + 4: pos + 8], "little")
        if chunk == b"fmt ":
            body = head[pos + 8: pos + 8 + min(size, 40)]
            if len(body) < 2:
                return None
            tag = int.from_bytes(body[:2], "little")
            if tag == WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = int.from_bytes(body[24:26], "little")
            return tag
        pos += 8 + size + (size & 1)
    return None


def _read_head(source: AudioSource, size: int = 4096) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read(size)
    head = source.read(size)
    source.seek(0)
    return head


def _open_libsndfile(source: AudioSource) -> SoundfileDecoder | None:
    """libsndfile's decoder, or None for a file it should not read: an unrecognised format, one
    whose header says "length unknown" (a streamed FLAC: libsndfile's reads seek, which then fails),
    or an IMA ADPCM WAV (libsndfile 1.2.2's reader of its header has CVE-2026-37555; FFmpeg reads it)."""
    if wav_format_tag(_read_head(source)) == IMA_ADPCM:
        return None
    try:
        snd = _open_soundfile(source)
    except Exception as exc:  # libsndfile raises several types for garbage input
        if getattr(exc, "code", None) == SF_ERR_UNRECOGNISED_FORMAT:
            return None
        raise UndecodableAudio(f"could not decode audio: {_libsndfile_message(exc)}") from exc
    if not 0 <= snd.frames < UNKNOWN_LENGTH:
        snd.close()
        return None
    return SoundfileDecoder(snd)


def open_audio(source: AudioSource, max_duration_s: float = math.inf) -> tuple[Decoder, AudioInfo]:
    """Open a path or a readable, seekable file and sanity-check it before any decoding work.

    libsndfile first; FFmpeg (PyAV) for what libsndfile does not recognise or cannot stream. The
    caller closes the decoder.
    """
    decoder: Decoder | None = _open_libsndfile(source)
    if decoder is None:
        from diffres.ffmpeg import open_ffmpeg  # PyAV only loads when a file needs it

        if not isinstance(source, (str, os.PathLike)):
            source.seek(0)
        decoder = open_ffmpeg(source)
    try:
        if isinstance(decoder, SoundfileDecoder):
            decoder.check_damage()
        _check_header(decoder.info, max_duration_s)
    except BaseException:
        decoder.close()
        raise
    return decoder, decoder.info


class AudioStream:
    """Mono float32 blocks at the target rate, decoded and resampled one block at a time.

    Every block is checked as it is decoded: NaN/Inf, range, and the duration limit (counted in
    decoded samples, so a file without a length in its header is cut off at the limit too).
    """

    def __init__(self, decoder: Decoder, info: AudioInfo, target_rate: int,
                 max_duration_s: float = math.inf) -> None:
        self._decoder = decoder
        self.info = info
        self.target_rate = target_rate
        self._max_duration_s = max_duration_s
        self._max_frames = max_duration_s * info.sample_rate
        self._block = max(1, BLOCK_SAMPLES // info.channels)
        self._resampler = (None if info.sample_rate == target_rate else
                           soxr.ResampleStream(info.sample_rate, target_rate, 1, dtype="float32", quality="HQ"))
        self.frames_read = 0
        self.peak = 0.0
        self.done = False

    @property
    def duration_s(self) -> float:
        """Seconds decoded so far (the whole file once `done`)."""
        return self.frames_read / self.info.sample_rate

    def read(self) -> np.ndarray | None:
        """The next block (possibly empty); None once the file and the resampler are drained."""
        if self.done:
            return None
        raw = self._decoder.read(self._block)
        if len(raw) == 0:
            self.done = True
            if self.frames_read == 0:
                raise EmptyAudio("audio contains no samples")
            self._decoder.check_complete(self.frames_read)
            if self._resampler is None:
                return np.zeros(0, np.float32)
            return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        self.frames_read += len(raw)
        if self.frames_read > self._max_frames:
            raise AudioTooLong(f"audio is longer than the {self._max_duration_s:g} s limit")
        if not np.isfinite(raw).all():
            raise NonFiniteAudio("audio contains NaN or Inf samples")
        mono = np.ascontiguousarray(raw[:, 0]) if raw.shape[1] == 1 else raw.mean(axis=1, dtype=np.float32)
        self.peak = max(self.peak, float(np.abs(mono).max()))
        if self.peak > MAX_ABS_SAMPLE:
            raise OutOfRangeAudio(f"sample values out of range (peak {self.peak:.3g}); float audio is expected "
                                  f"in [-1, 1] and at most {MAX_ABS_SAMPLE:g} is accepted")
        return mono if self._resampler is None else self._resampler.resample_chunk(mono)


def load_audio(path: AudioSource, sample_rate: int, max_duration_s: float = math.inf) -> np.ndarray:
    """A whole file as mono float32 at `sample_rate`, through the same checks the service applies."""
    decoder, info = open_audio(path, max_duration_s)
    try:
        stream = AudioStream(decoder, info, sample_rate, max_duration_s)
        blocks = []
        while (block := stream.read()) is not None:
            blocks.append(block)
    finally:
        decoder.close()
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


class ArrayDecoder:
    """Samples already in memory ([samples] or [samples, channels]), read like a file (the Decoder protocol)."""

    def __init__(self, samples: np.ndarray, sample_rate: int) -> None:
        array = np.asarray(samples)
        if array.ndim not in (1, 2) or array.dtype.kind not in "fi":
            raise UndecodableAudio(f"an audio array must be 1-D [samples] or 2-D [samples, channels] of numbers, "
                                   f"got shape {array.shape} of {array.dtype}")
        self._frames = array.reshape(len(array), -1).astype(np.float32, copy=False)
        if array.dtype.kind == "i":  # integer PCM, scaled as libsndfile scales it
            self._frames = self._frames / float(np.iinfo(array.dtype).max + 1)
        self._position = 0
        self.info = AudioInfo(int(sample_rate), self._frames.shape[1], len(self._frames), "RAW",
                              "FLOAT" if array.dtype.kind == "f" else f"PCM_{8 * array.dtype.itemsize}")

    def read(self, frames: int) -> np.ndarray:
        block = self._frames[self._position:self._position + frames]
        self._position += len(block)
        return block

    def check_complete(self, frames_read: int) -> None:
        """In-memory samples are always complete."""

    def close(self) -> None:
        self._position = len(self._frames)


def open_array(samples: np.ndarray, sample_rate: int, max_duration_s: float = math.inf) -> tuple[Decoder, AudioInfo]:
    """Samples in memory, opened like a file and put through the same header checks (rate, length)."""
    decoder = ArrayDecoder(samples, sample_rate)
    _check_header(decoder.info, max_duration_s)
    return decoder, decoder.info


# format -> numpy dtype, scale to [-1, 1] (int16 / 32768, as libsndfile decodes PCM_16), subtype
PCM_FORMATS: dict[str, tuple[str, float, str]] = {"s16le": ("<i2", 32768.0, "PCM_16"), "f32le": ("<f4", 1.0, "FLOAT")}


class PcmDecoder:
    """Raw interleaved PCM fed message by message (a live stream), read as float32 frames (the Decoder protocol)."""

    def __init__(self, fmt: str, channels: int, sample_rate: int) -> None:
        dtype, self._scale, subtype = PCM_FORMATS[fmt]
        self._dtype = np.dtype(dtype)
        self._channels = channels
        self._frame_bytes = self._dtype.itemsize * channels
        self._pending = bytearray()
        self.info = AudioInfo(sample_rate, channels, None, "RAW", subtype)

    def feed(self, data: bytes) -> None:
        self._pending += data

    @property
    def frames_buffered(self) -> int:
        return len(self._pending) // self._frame_bytes

    def read(self, frames: int) -> np.ndarray:
        n = min(frames, self.frames_buffered)
        raw = bytes(self._pending[:n * self._frame_bytes])
        del self._pending[:n * self._frame_bytes]
        x = np.frombuffer(raw, self._dtype).astype(np.float32)
        if self._scale != 1.0:
            x /= self._scale
        return x.reshape(n, self._channels)

    def check_complete(self, frames_read: int) -> None:
        if self._pending:
            raise UndecodableAudio(f"the stream ended inside a sample frame ({len(self._pending)} stray bytes; "
                                   f"a frame is {self._frame_bytes} bytes)")

    def close(self) -> None:
        self._pending.clear()
