"""Structured JSON logs: one line per event, with the request id carried bff → api → task."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import traceback
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "envcat_request_id", default=None
)
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; extra= fields become keys."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self.process_name,
            "logger": record.name,
            "event": record.getMessage(),
        }
        if (request_id := request_id_var.get()) is not None:
            payload["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # Type and frames only: exception text may quote the data that caused it.
            payload["exception"] = record.exc_info[0].__name__
            frames = traceback.extract_tb(record.exc_info[2])[-12:]
            payload["stack"] = [f"{f.filename}:{f.lineno} {f.name}" for f in frames]
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(process_name: str, level: str = "INFO") -> None:
    """Send every log record to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process_name))
    root.handlers = [handler]
    root.setLevel(level.upper())
