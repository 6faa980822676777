"""Receive request bodies into memory or temporary files, enforcing the size limit while streaming.

Nothing is buffered past the limit: a declared Content-Length over it is refused before reading,
and a body that grows over it (chunked, or lying) is cut off at the chunk that crosses it. Files
spool to disk past 1 MiB, so a one-hour upload costs disk, not memory; below that a file stays in
memory and is decoded from there (`Upload.file` is then the spool's in-memory buffer: libsndfile
reads it through its virtual I/O, and no temporary file is ever created for it).
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import BinaryIO

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from diffres.errors import BadRequest, EmptyAudio, InvalidParameters, PayloadTooLarge, UnsupportedMediaType

SPOOL_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024
ACCEPTED = "multipart/form-data (field 'file'), audio/* or application/octet-stream"


@dataclass
class Upload:
    """One received file, rewound and ready to decode; `file` is in memory when it is small (SPOOL_BYTES)."""

    file: BinaryIO
    filename: str | None
    size: int
    spool: BinaryIO | None = None  # what `file` is the buffer of: kept open (closing it closes the buffer)

    def close(self) -> None:
        (self.spool or self.file).close()

    @classmethod
    def of(cls, spool: BinaryIO, filename: str | None, size: int) -> Upload:
        """A received spool: its in-memory buffer when it never went to disk (a SpooledTemporaryFile's
        fileno() would write it to a temporary file first, only for the decoder to read it back)."""
        if getattr(spool, "_rolled", True) is False and isinstance(buffer := getattr(spool, "_file", None), io.BytesIO):
            buffer.seek(0)
            return cls(buffer, filename, size, spool)
        return cls(spool, filename, size)


@dataclass
class Body:
    """A received request: its files in order, and its plain form fields."""

    files: list[tuple[str, Upload]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def single(self, name: str = "file") -> Upload:
        """The one audio file of a classify request."""
        matches = [u for n, u in self.files if n == name]
        if not matches:
            got = sorted({n for n, _ in self.files} | set(self.fields))
            if name in self.fields:
                raise InvalidParameters(f"multipart field '{name}' must be a file upload (curl -F {name}=@clip.wav)")
            raise InvalidParameters(f"multipart field '{name}' is required (got: {', '.join(got) or 'no fields'})")
        if len(matches) > 1:
            raise InvalidParameters(f"one file expected in field '{name}', got {len(matches)}; "
                                    "use /v1/classify/batch for several")
        return matches[0]


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def limit_message(limit: int) -> str:
    return f"request body exceeds the {limit} byte limit (DIFFRES_MAX_UPLOAD_BYTES)"


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse before reading a byte when the client already says the body is too large."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit_message(limit))


async def limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body, chunk by chunk; 413 as soon as the total crosses `limit`."""
    check_declared_length(request, limit)
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(limit_message(limit))
            yield chunk
    except ClientDisconnect as exc:
        raise BadRequest("client disconnected during upload", code="client_disconnected") from exc


async def _read_raw(request: Request, limit: int) -> Body:
    spool = SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by receive_body's caller
    upload = UploadFile(spool, size=0)  # type: ignore[arg-type]
    try:
        async for chunk in limited_stream(request, limit):
            await upload.write(chunk)  # in a thread once spooled to disk
        await upload.seek(0)
    except BaseException:
        await upload.close()
        raise
    return Body(files=[("file", Upload.of(upload.file, None, upload.size or 0))])


async def _read_multipart(request: Request, limit: int, max_files: int) -> Body:
    parser = MultiPartParser(request.headers, limited_stream(request, limit), max_files=max_files,
                             max_fields=100, max_part_size=MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise InvalidParameters(f"too many files: at most {max_files} per request") from exc
        raise BadRequest(f"invalid multipart body: {exc.message}", code="invalid_multipart") from exc
    body = Body()
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            body.files.append((name, Upload.of(value.file, value.filename, value.size or 0)))
        else:
            body.fields[name] = value
    return body


@asynccontextmanager
async def receive_body(request: Request, limit: int, *, allow_raw: bool = True, max_files: int = 1000
                       ) -> AsyncIterator[Body]:
    """Receive the body (multipart, or raw audio when allowed) and delete its temp files afterwards."""
    if request.headers.get("content-length") == "0":
        raise EmptyAudio("request body is empty")
    kind = media_type(request)
    if kind == "multipart/form-data":
        body = await _read_multipart(request, limit, max_files)
    elif allow_raw and (kind.startswith("audio/") or kind == "application/octet-stream"):
        body = await _read_raw(request, limit)
    else:
        accepted = ACCEPTED if allow_raw else "multipart/form-data"
        raise UnsupportedMediaType(f"unsupported content type '{kind or 'none'}'; send {accepted}")
    try:
        yield body
    finally:
        for _, upload in body.files:
            upload.close()
