"""The fallback decoder: FFmpeg's libraries through PyAV (its wheels bundle the codecs; no program, no process).

Only for what libsndfile does not recognise: what browsers and phones record (WebM/Opus, MP4/M4A
AAC, ADTS AAC, AMR, Ogg variants) and video containers, of which the first audio stream is used;
for a streamed FLAC without a length, which libsndfile opens but cannot read; and for IMA ADPCM WAV,
whose header libsndfile 1.2.2 mis-parses (CVE-2026-37555).
Only the listed demuxers may open a file (FFmpeg otherwise probes dozens, some of which, like HLS
playlists, open further files). Decoding is frame by frame, handed on in blocks; nothing is written
to disk. A WebM from a browser has no duration in its header, so the header is never asked how long
the audio is; it is only used to notice a file that ends before its own index or duration says.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from diffres.decode import AudioInfo
from diffres.errors import EmptyAudio, TruncatedAudio, UndecodableAudio

# Demuxer name (as FFmpeg reports it) -> the format name we report.
CONTAINERS = {
    "matroska,webm": "WEBM",
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4",
    "aac": "ADTS",
    "amr": "AMR",
    "ogg": "OGG",
    "avi": "AVI",
    "flv": "FLV",
    "mpegts": "MPEG-TS",
    "asf": "ASF",
    "caf": "CAF",
    "flac": "FLAC",  # only reached for streamed FLAC without a length, which libsndfile cannot read
    "wav": "WAV",  # only reached for IMA ADPCM WAV, kept away from libsndfile 1.2.2 (CVE-2026-37555)
}
# FFmpeg matches each comma-separated name of a demuxer against this list.
FORMAT_WHITELIST = "matroska,mov,aac,amr,ogg,avi,flv,mpegts,asf,caf,flac,wav"
WEBM_CODECS = ("opus", "vorbis")
DURATION_SLACK_S = 0.1  # a container's duration may round to its timebase and codec frames


def _format_name(demuxer: str, codec: str) -> str:
    """What we call the container: FFmpeg has one demuxer for WebM and the Matroska it is a profile of."""
    if demuxer == "matroska,webm" and codec not in WEBM_CODECS:
        return "MATROSKA"
    return CONTAINERS[demuxer]


def _samples(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """One decoded frame as float32 [samples, channels], whatever FFmpeg's sample format."""
    data = frame.to_ndarray()
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    if data.dtype.kind == "f":
        return data.astype(np.float32, copy=False)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    return (data / float(-np.iinfo(data.dtype).min)).astype(np.float32)


class FfmpegDecoder:
    """The first audio stream of a container, decoded by FFmpeg, handed out in blocks."""

    def __init__(self, container: av.container.InputContainer) -> None:
        self._container = container
        self._stream = container.streams.audio[0]
        self._packets = 0
        self._frames = self._decode()
        first = next(self._frames, None)
        codec = self._stream.codec_context
        self._rate = first.sample_rate if first is not None else codec.sample_rate
        self._channels = len((first.layout if first is not None else codec.layout).channels)
        if not self._rate or not self._channels:
            raise EmptyAudio("the audio stream has no samples")
        self._pending = [] if first is None else [self._convert(first)]
        self.info = AudioInfo(self._rate, self._channels, None, _format_name(container.format.name, codec.name),
                              codec.name.upper())

    def _decode(self) -> Iterator[av.AudioFrame]:
        try:
            for packet in self._container.demux(self._stream):
                self._packets += packet.size > 0
                yield from packet.decode()
        except av.error.EOFError as exc:
            raise TruncatedAudio(f"truncated or corrupt file: {_reason(exc)}") from exc
        except av.FFmpegError as exc:
            raise UndecodableAudio(f"could not decode audio: corrupt or truncated stream ({_reason(exc)})") from exc

    def _convert(self, frame: av.AudioFrame) -> np.ndarray:
        if frame.sample_rate != self._rate or len(frame.layout.channels) != self._channels:
            raise UndecodableAudio(f"the audio stream changes from {self._rate} Hz, {self._channels} channels to "
                                   f"{frame.sample_rate} Hz, {len(frame.layout.channels)} channels mid-stream")
        return _samples(frame, self._channels)

    def read(self, frames: int) -> np.ndarray:
        """About `frames` frames (at most one codec frame more); empty at the end."""
        blocks, total = self._pending, sum(len(b) for b in self._pending)
        self._pending = []
        while total < frames:
            frame = next(self._frames, None)
            if frame is None:
                break
            blocks.append(self._convert(frame))
            total += len(blocks[-1])
        if not blocks:
            return np.zeros((0, self._channels), np.float32)
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def check_complete(self, frames_read: int) -> None:
        """An index (MP4, AVI) or a header duration (WebM from a file) that promises more means a cut file."""
        declared = self._stream.frames
        if declared and self._packets < declared:
            raise TruncatedAudio(f"truncated or corrupt file: the index lists {declared} packets, "
                                 f"only {self._packets} could be read")
        if self._container.format.name == "matroska,webm" and self._container.duration:
            declared_s = self._container.duration / av.time_base
            if frames_read / self._rate < declared_s - DURATION_SLACK_S:
                raise TruncatedAudio(f"truncated or corrupt file: the header says {declared_s:.2f} s, "
                                     f"only {frames_read / self._rate:.2f} s could be decoded")

    def close(self) -> None:
        self._frames.close()
        self._container.close()


def _reason(exc: Exception) -> str:
    """FFmpeg's words for a failure; a demuxer kept out by the whitelist reads as "Invalid argument"."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return "no supported container found" if reason == "Invalid argument" else reason


def open_ffmpeg(source: BinaryIO | str | os.PathLike[str]) -> FfmpegDecoder:
    """Open with FFmpeg, restricted to the listed containers, and decode the first frame."""
    try:
        container = av.open(source if isinstance(source, (str, os.PathLike)) else source, mode="r",
                            options={"format_whitelist": FORMAT_WHITELIST})
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise UndecodableAudio("could not decode audio: not a format this service reads, or a damaged or "
                               f"incomplete file (libsndfile: format not recognised; FFmpeg: {_reason(exc)})") from exc
    try:
        if container.format.name not in CONTAINERS:
            raise UndecodableAudio(f"could not decode audio: unsupported container '{container.format.name}'")
        if not container.streams.audio:
            raise UndecodableAudio(f"no audio stream in this {CONTAINERS[container.format.name]} file")
        return FfmpegDecoder(container)
    except BaseException:
        container.close()
        raise
