"""Structured logs for every process: one setup call at start sends every logger's lines to stderr,
as JSON lines for a log collector or as readable text for a person (SLUICE_LOG_FORMAT).

A JSON line carries `ts` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`, `process`
(api | worker | dispatcher), `pid`, the id of the request it belongs to, the record's `extra`
fields (the API's access log passes route, method, status, duration_ms, …) and `exc_info` as text.
The request id comes from a ContextVar the API's middleware sets per request, so every line a
request causes carries it without being passed down. Plain `logging` with orjson rather than a
logging library: the access log is on the hot path, and a record costs a few microseconds here.
granian's own lines join the same stream; its access log is silenced, `sluice.access` is the one.
"""

import json
import logging
import os
import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import TextIO

import orjson

from storage.config import SharedConfig, load_or_exit

# The id of the request being handled (X-Request-ID), "" outside one: every line it causes carries it.
request_id: ContextVar[str] = ContextVar("sluice_request_id", default="")

PROCESSES = ("api", "worker", "dispatcher")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TEXT_FORMAT_IN_REQUEST = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# What every LogRecord has; anything else on a record came from `extra`.
RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
HANDLER_NAME = "sluice"
# granian's logging configuration for its main process (`--log-config`): its lines in our format.
GRANIAN_LOG_CONFIG = Path(__file__).with_name("granian_logging.json")


def _request_id(record: logging.LogRecord) -> str:
    return request_id.get() or getattr(record, "request_id", "")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, keys as the module docstring lists them."""

    def __init__(self, process: str):
        super().__init__()
        self.process = process
        self._second, self._stamp = -1, ""  # gmtime+strftime once per second, not per record

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self._timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
            "pid": record.process,
        }
        if rid := _request_id(record):
            line["request_id"] = rid
        for key, value in vars(record).items():
            if key not in RECORD_FIELDS:
                line.setdefault(key, value)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:  # what orjson cannot write at all (an int past 64 bits): the line is not lost
            return json.dumps(line, default=str)

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """The readable line, with `[request id]` after the logger's name inside a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        rid = _request_id(record)
        if not rid:
            return super().formatMessage(record)
        return TEXT_FORMAT_IN_REQUEST % {**vars(record), "request_id": rid}


def wants_json(log_format: str, stream: TextIO) -> bool:
    """`auto` means JSON unless a person is reading: stderr is not a terminal."""
    if log_format != "auto":
        return log_format == "json"
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def formatter(process: str, log_format: str, stream: TextIO) -> logging.Formatter:
    return JsonFormatter(process) if wants_json(log_format, stream) else TextFormatter()


def setup(process: str, shared: SharedConfig, stream: TextIO | None = None) -> None:
    """Every logger of this process to `stream` (stderr) at SLUICE_LOG_LEVEL, in SLUICE_LOG_FORMAT.
    Called again, it replaces its own handler and leaves others' (pytest's) alone."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(process, shared.log_format, stream))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(shared.log_level.upper())
    adopt_granian()


def adopt_granian() -> None:
    """granian's own lines through the root handler; its access log off (the API writes `sluice.access`).
    granian configures its loggers in each worker before it builds the app, so this runs after it."""
    server = logging.getLogger("_granian")
    server.handlers.clear()
    server.propagate = True
    access = logging.getLogger("granian.access")
    access.handlers.clear()
    access.propagate, access.disabled = False, True


def granian_formatter() -> logging.Formatter:
    """The formatter GRANIAN_LOG_CONFIG names, for granian's main process (which runs no Sluice code
    of its own before it logs): the API's, configured from the environment like the API."""
    return formatter("api", load_or_exit(os.environ).shared.log_format, sys.stderr)
