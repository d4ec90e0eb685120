"""Structured logs: JSON lines a collector can parse, the request id carried into every line a
request causes, readable text at a terminal, granian's lines in the same stream."""

import asyncio
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from storage.config import load
from storage.telemetry import logs

ROOT = Path(__file__).resolve().parents[3]
RFC3339_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FORMER_TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING sluice\.test careful: 3 left$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def output():
    """setup() writing to a buffer; yields a function (log format, stream) → stream; undone after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)

    def configure(log_format: str, stream: io.StringIO | None = None) -> io.StringIO:
        stream = stream if stream is not None else io.StringIO()
        logs.setup("api", load({"SLUICE_LOG_FORMAT": log_format, "SLUICE_LOG_LEVEL": "info"}).shared, stream)
        return stream

    yield configure
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_parse_and_carry_every_field(output):
    stream = output("json")
    extra = {"route": "/api/v1/workspaces/{id}", "method": "GET", "status": 200, "duration_ms": 1.25, "workspace_id": 7}
    logging.getLogger("sluice.access").info("GET /api/v1/workspaces/{id} 200 1.25", extra=extra)
    [line] = lines(stream)
    assert RFC3339_UTC_MS.match(line.pop("ts"))
    assert isinstance(line.pop("pid"), int)
    assert line == {
        "level": "INFO",
        "logger": "sluice.access",
        "message": "GET /api/v1/workspaces/{id} 200 1.25",
        "process": "api",
        **extra,
    }


def test_exception_is_one_string_field_of_one_line(output):
    stream = output("json")
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("sluice.test").exception("it failed")
    [line] = lines(stream)
    assert line["level"] == "ERROR" and line["message"] == "it failed"
    assert line["exc_info"].startswith("Traceback") and "ValueError: bad value" in line["exc_info"]


def test_extra_fields_never_replace_the_line_s_own_and_odd_values_become_text(output):
    stream = output("json")
    logging.getLogger("sluice.test").info("hello", extra={"level": "fake", "logger": "fake", "thing": object()})
    logging.getLogger("sluice.test").info("big", extra={"count": 2**70})
    first, second = lines(stream)
    assert first["level"] == "INFO" and first["logger"] == "sluice.test"
    assert first["thing"].startswith("<object object")
    assert second["count"] == 2**70


def test_request_id_is_carried_into_lines_logged_inside_a_request(output):
    stream = output("json")
    log = logging.getLogger("sluice.test")

    async def handle_request(request_id: str) -> None:
        token = logs.request_id.set(request_id)
        try:
            log.info("handling")
            await asyncio.sleep(0)
            await asyncio.create_task(asyncio.to_thread(log.info, "in a thread the request started"))
        finally:
            logs.request_id.reset(token)

    async def two_requests_at_once() -> None:
        await asyncio.gather(handle_request("req_a"), handle_request("req_b"))
        log.info("between requests")

    asyncio.run(two_requests_at_once())
    by_id: dict[str | None, list[str]] = {}
    for line in lines(stream):
        by_id.setdefault(line.get("request_id"), []).append(line["message"])
    assert by_id == {
        "req_a": ["handling", "in a thread the request started"],
        "req_b": ["handling", "in a thread the request started"],
        None: ["between requests"],
    }


def test_text_at_a_terminal_is_the_former_readable_line(output):
    stream = output("auto", Terminal())
    logging.getLogger("sluice.test").warning("careful: %d left", 3)
    assert FORMER_TEXT_LINE.match(stream.getvalue().rstrip("\n"))


def test_text_names_the_request_after_the_logger(output):
    stream = output("text")
    token = logs.request_id.set("req_0123")
    try:
        logging.getLogger("sluice.test").info("inside")
    finally:
        logs.request_id.reset(token)
    assert stream.getvalue().rstrip("\n").endswith(" INFO sluice.test [req_0123] inside")


def test_auto_writes_json_when_no_person_reads(output):
    stream = output("auto", io.StringIO())
    logging.getLogger("sluice.test").info("to a file")
    assert lines(stream)[0]["message"] == "to a file"


def test_setup_again_replaces_its_own_handler_and_keeps_others(output):
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    first = output("json")
    second = output("json")
    logging.getLogger("sluice.test").info("once")
    assert first.getvalue() == "" and len(lines(second)) == 1
    assert other in logging.getLogger().handlers


def test_granian_lines_join_the_stream_and_its_access_log_is_silenced(output):
    stream = output("json")
    logging.getLogger("_granian.serve").info("Started worker-1")
    logging.getLogger("granian.access").info('127.0.0.1 - "GET / HTTP/1.1" 200 0.3')
    assert [line["logger"] for line in lines(stream)] == ["_granian.serve"]


def test_granian_main_process_logs_json_through_its_config_file():
    """granian's main process reads GRANIAN_LOG_CONFIG (`--log-config`) as granian itself does."""
    code = (
        "import json, logging; from granian.log import configure_logging, LogLevels; "
        f"configure_logging(LogLevels.info, json.load(open({str(logs.GRANIAN_LOG_CONFIG)!r}))); "
        "logging.getLogger('_granian').info('Starting granian'); "
        "logging.getLogger('granian.access').info('an access line')"
    )
    env = {"PATH": "/usr/bin:/bin", "SLUICE_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    [line] = [orjson.loads(text) for text in done.stderr.splitlines()]
    assert line["logger"] == "_granian" and line["message"] == "Starting granian" and line["process"] == "api"
    assert done.stdout == ""
