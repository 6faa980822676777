"""Decode, mix down, resample and window audio incrementally, so memory stays bounded for any length.

Everything here is synchronous and CPU-bound: callers run it in a worker thread. Decoding is
libsndfile's (soundfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...), resampling soxr's streaming
resampler, so a one-hour file is never held in memory, only one block plus one window.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from app.errors import BadAudio, PayloadTooLarge

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
BLOCK_SAMPLES = 1 << 16  # per read, across all channels: bounds memory whatever the channel count
MAX_ABS_SAMPLE = 1e4  # 80 dB over full scale; the model's float32 spectrum overflows near 1e19
MP3_FRAME = 1152  # MP3 lengths without a Xing/LAME header are estimates: allow this much slack

# libsndfile reads what it can of a damaged file and only says so in its log: "data : 64000 (should
# be 31978)" when a WAV/AIFF header claims more than the file holds, and these for a cut-off Ogg stream.
_DATA_MISMATCH = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_DAMAGED = ("File ended unexpectedly", "Junk after the last page")


@dataclass(frozen=True)
class AudioInfo:
    """What the container header says about the upload."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def _libsndfile_message(exc: Exception) -> str:
    return getattr(exc, "error_string", None) or str(exc)


def open_audio(file: BinaryIO, max_duration_s: float) -> tuple[sf.SoundFile, AudioInfo]:
    """Open and sanity-check the header; reject what cannot be decoded faithfully before any work."""
    try:
        file.flush()  # libsndfile reads the descriptor directly, past Python's buffer
        source: BinaryIO | int = file.fileno()  # a real (temp) file: libsndfile reads it natively
    except (AttributeError, OSError, ValueError):
        source = file  # in-memory: libsndfile's virtual I/O through Python callbacks
    try:
        snd = sf.SoundFile(source, closefd=False) if isinstance(source, int) else sf.SoundFile(source)
    except Exception as exc:  # libsndfile raises several types for garbage input
        raise BadAudio(f"could not decode audio: {_libsndfile_message(exc)}") from exc
    try:
        info = AudioInfo(snd.samplerate, snd.channels, snd.frames, snd.format, snd.subtype)
        if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
            raise BadAudio(f"unsupported sample rate {info.sample_rate} Hz "
                           f"(accepted: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)", code="unsupported_sample_rate")
        if info.channels < 1:
            raise BadAudio("audio has no channels")
        log = snd.extra_info or ""
        mismatch = _DATA_MISMATCH.search(log)
        if mismatch and int(mismatch.group(1)) > int(mismatch.group(2)):
            raise BadAudio(f"truncated or corrupt file: header declares {mismatch.group(1)} bytes of audio data, "
                           f"the file holds {mismatch.group(2)}", code="truncated_audio")
        damage = next((marker for marker in _DAMAGED if marker in log), None)
        if damage:
            raise BadAudio(f"truncated or corrupt file: {damage.lower()}", code="truncated_audio")
        if info.frames > max_duration_s * info.sample_rate:
            raise PayloadTooLarge(f"audio is {info.duration_s:.1f} s long; the limit is {max_duration_s:g} s "
                                  "(DIFFRES_MAX_DURATION_S)", code="audio_too_long")
    except BaseException:
        snd.close()
        raise
    return snd, info


class AudioStream:
    """Mono float32 blocks at the model's rate, decoded and resampled one block at a time."""

    def __init__(self, snd: sf.SoundFile, info: AudioInfo, target_rate: int, max_duration_s: float) -> None:
        self._snd = snd
        self.info = info
        self.target_rate = target_rate
        self._max_frames = int(max_duration_s * info.sample_rate)
        self._block = max(1, BLOCK_SAMPLES // info.channels)
        self._resampler = (None if info.sample_rate == target_rate else
                           soxr.ResampleStream(info.sample_rate, target_rate, 1, dtype="float32", quality="HQ"))
        self.frames_read = 0
        self.peak = 0.0
        self.done = False

    def read(self) -> np.ndarray | None:
        """The next block (possibly empty); None once the file and the resampler are drained."""
        if self.done:
            return None
        try:
            raw = self._snd.read(self._block, dtype="float32", always_2d=True)
        except Exception as exc:
            raise BadAudio(f"could not decode audio: {_libsndfile_message(exc)}") from exc
        if len(raw) == 0:
            self.done = True
            self._check_complete()
            if self._resampler is None:
                return np.zeros(0, np.float32)
            return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        self.frames_read += len(raw)
        if self.frames_read > self._max_frames:
            raise PayloadTooLarge(f"audio is longer than the {self._max_frames / self.info.sample_rate:g} s limit "
                                  "(DIFFRES_MAX_DURATION_S)", code="audio_too_long")
        if not np.isfinite(raw).all():
            raise BadAudio("audio contains NaN or Inf samples", code="non_finite_audio")
        mono = np.ascontiguousarray(raw[:, 0]) if raw.shape[1] == 1 else raw.mean(axis=1, dtype=np.float32)
        self.peak = max(self.peak, float(np.abs(mono).max()))
        if self.peak > MAX_ABS_SAMPLE:
            raise BadAudio(f"sample values out of range (peak {self.peak:.3g}); float audio is expected "
                           f"in [-1, 1] and at most {MAX_ABS_SAMPLE:g} is accepted", code="out_of_range_audio")
        return mono if self._resampler is None else self._resampler.resample_chunk(mono)

    def _check_complete(self) -> None:
        """Refuse to classify a prefix: a file that ends before its header says is an error, not a shorter clip."""
        if self.frames_read == 0:
            raise BadAudio("audio contains no samples", code="empty_audio")
        expected = self.info.frames
        slack = max(2 * MP3_FRAME, expected // 50) if self.info.format == "MP3" else 0
        if expected > 0 and self.frames_read < expected - slack:
            raise BadAudio(f"truncated or corrupt file: header declares {expected} frames, "
                           f"only {self.frames_read} could be decoded", code="truncated_audio")


class WindowCutter:
    """Cuts a stream into fixed-length windows at a fixed hop; the last one is aligned to the end.

    Holds at most one window plus one pushed block. Every sample is covered; the end-aligned last
    window overlaps its predecessor more than the others instead of being zero-padded.
    """

    def __init__(self, window: int, hop: int) -> None:
        if not 0 < hop <= window:
            raise ValueError("need 0 < hop <= window")
        self.window, self.hop = window, hop
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # absolute index of _buf[0]
        self._next = 0  # start of the next full window
        self._covered = 0  # end of the last emitted window
        self.total = 0

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self._buf = np.concatenate([self._buf, samples.astype(np.float32, copy=False)])
        self.total += len(samples)
        out = []
        while self._next + self.window <= self.total:
            offset = self._next - self._buf_start
            out.append((self._next, self._buf[offset:offset + self.window].copy()))
            self._covered = self._next + self.window
            self._next += self.hop
        keep_from = max(0, min(self._next, self.total - self.window))
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:]
            self._buf_start = keep_from
        return out

    def finish(self) -> list[tuple[int, np.ndarray]]:
        if self._covered >= self.total or self.total == 0:
            return []
        start = max(0, self.total - self.window)
        self._covered = self.total
        return [(start, self._buf[start - self._buf_start:].copy())]


@dataclass
class Whole:
    """The clip fits one inference: all its model-rate samples."""

    samples: np.ndarray


@dataclass
class Windows:
    """The next windows of a long clip: start offsets (model-rate samples) and samples."""

    starts: list[int]
    windows: list[np.ndarray]


class ClipReader:
    """Decides between one inference and windowing while decoding, without knowing the length up front.

    Buffers up to `long_threshold` samples; a clip that ends within it is returned whole, a longer
    one switches to windows, handed out at most `max_windows` at a time.
    """

    def __init__(self, stream: AudioStream, window: int, hop: int, long_threshold: int) -> None:
        self.stream = stream
        self._cutter = WindowCutter(window, hop)
        self._long_threshold = long_threshold
        self._head: list[np.ndarray] = []
        self._head_len = 0
        self._ready: deque[tuple[int, np.ndarray]] = deque()
        self.windowed = False
        self.finished = False

    @property
    def total_samples(self) -> int:
        return self._cutter.total if self.windowed else self._head_len

    def next(self, max_windows: int) -> Whole | Windows | None:
        if self.finished and not self._ready:
            return None
        if not self.windowed:
            while self._head_len <= self._long_threshold:
                block = self.stream.read()
                if block is None:
                    self.finished = True
                    return Whole(np.concatenate(self._head) if self._head else np.zeros(0, np.float32))
                self._head.append(block)
                self._head_len += len(block)
            self.windowed = True
            self._ready.extend(self._cutter.push(np.concatenate(self._head)))
            self._head = []
        while len(self._ready) < max_windows and not self.finished:
            block = self.stream.read()
            if block is None:
                self.finished = True
                self._ready.extend(self._cutter.finish())
            else:
                self._ready.extend(self._cutter.push(block))
        taken = [self._ready.popleft() for _ in range(min(max_windows, len(self._ready)))]
        return Windows([s for s, _ in taken], [w for _, w in taken])
