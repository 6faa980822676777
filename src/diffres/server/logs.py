"""Logs for people (text, in a terminal) or for machines (JSON lines), each with the request id behind it.

DIFFRES_LOG_FORMAT: `text`, `json`, or `auto` (the default: text when stderr is a terminal, JSON
otherwise; the image sets json).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """ts, level, logger, message, request_id, plus whatever dict was passed as `extra={"fields": ...}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`12:00:01.234 INFO  message (12.3 ms) [request id]`: what a person reads in a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        line = f"{stamp} {record.levelname:<5} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and "duration_ms" in fields:
            line += f" ({fields['duration_ms']:.1f} ms)"
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            line += f" [{request_id[:8]}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", log_format: str = "auto") -> None:
    """Route the root logger (and uvicorn's, which propagate to it) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    text = log_format == "text" or (log_format == "auto" and sys.stderr.isatty())
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # What neither formatter writes is not collected for every record (Python's logging docs, "Optimization"):
    # the caller's file and line (a walk up the stack), thread, process and multiprocessing names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
