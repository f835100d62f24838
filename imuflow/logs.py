"""JSON-lines logging with per-task context (file_id, batch_number, action).

Context lives in contextvars, so every line logged while a job runs carries its
file_id and batch_number without threading them through every call.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, context, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context.get())
        extra = getattr(record, "ctx", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(service: str, level: str = "INFO") -> None:
    """Send every log line of this process to stdout as JSON."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def context(**values: Any) -> Iterator[None]:
    """Add structured fields to every log line inside the block."""
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**values: Any) -> None:
    """Add fields to the current task's context until it ends."""
    _context.set({**_context.get(), **values})


def current() -> dict[str, Any]:
    """The fields bound to the running task (file_id, batch_number, ...)."""
    return dict(_context.get())


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for one log call: `log.info("x", extra=fields(rows=3))`."""
    return {"ctx": values}
