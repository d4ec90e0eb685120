"""Storage stage "read gateway": read-only SQL for other processes while the ingest worker holds chdb.

An embedded chdb directory can be open in one process at a time, and the ingest worker keeps it
open. So when its CLICKHOUSE_URL is chdb://DIR the worker also listens on a Unix socket beside
the data (DIR/.sluice-query.sock) and runs the queries it receives on its one ClickHouse thread,
after its inserts. `client.open_reader` is the caller's side. With a ClickHouse server nothing
of this is needed: readers connect to it directly.

Protocol, one request per connection: the client sends one JSON object
{"sql": "...", "parameters": {...}} and closes its side; the server answers one JSON object,
{"columns": [...], "rows": [[...], ...]} or {"error": "..."}, and closes. Values that JSON lacks
(dates, UUIDs, decimals) arrive as text.

Read-only twice over: only SELECT/SHOW/DESCRIBE/EXPLAIN/WITH statements are taken, and they run
on a client whose session has readonly=2, which ClickHouse itself enforces.
"""

import asyncio
import hashlib
import logging
import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from storage.errors import StorageError, Unavailable

log = logging.getLogger(__name__)

SOCKET_NAME = ".sluice-query.sock"
# sun_path holds 108 bytes on Linux; longer directories get a socket named after their hash.
MAX_SOCKET_PATH = 100
MAX_REQUEST_BYTES = 1 << 20
READ_STATEMENT = re.compile(
    r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(SELECT|SHOW|DESCRIBE|DESC|EXPLAIN|WITH)\b", re.IGNORECASE | re.DOTALL
)
# An analyst's query may scan for a while; a reader does not wait forever on a stuck worker.
QUERY_TIMEOUT = 300.0
PING_TIMEOUT = 2.0


class QueryFailed(StorageError):
    """ClickHouse refused the query (syntax, unknown table, a write asked of the read-only gateway)."""


@dataclass(frozen=True)
class Result:
    column_names: tuple[str, ...]
    result_rows: list[tuple]


def socket_path(directory: str) -> str:
    path = os.path.join(os.path.realpath(directory), SOCKET_NAME)
    if len(path.encode()) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"sluice-query-{digest}.sock")


def is_read_only(sql: str) -> bool:
    return READ_STATEMENT.match(sql) is not None


# --- server side (inside the ingest worker) ----------------------------------------------


class Gateway:
    """Serves read queries on `path`; `call(fn, *args, **kwargs)` runs fn on the ClickHouse thread."""

    def __init__(self, path: str, call, reader_client):
        self.path, self.call, self.client = path, call, reader_client
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        Path(self.path).unlink(missing_ok=True)  # left by a worker that was killed
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_REQUEST_BYTES)
        os.chmod(self.path, 0o600)  # the data's owner only, like the directory itself

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            Path(self.path).unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_all(reader)
            writer.write(orjson.dumps(await self._answer(request), default=_as_text))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the reader went away; nothing to tell it
        finally:
            writer.close()

    async def _answer(self, request: bytes) -> dict:
        if not request:
            return {"pong": True}
        try:
            body = orjson.loads(request)
            sql, parameters = body["sql"], body.get("parameters")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return {"error": 'bad request: expected {"sql": ..., "parameters": {...}}'}
        if not is_read_only(sql):
            return {"error": "read-only gateway: only SELECT, SHOW, DESCRIBE, EXPLAIN and WITH queries are run"}
        try:
            result = await self.call(self.client.query, sql, parameters=parameters)
        except Exception as exc:  # noqa: BLE001 - any failure is the reader's answer, not the worker's crash
            return {"error": str(exc)}
        return {"columns": list(result.column_names), "rows": result.result_rows}


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """The request up to EOF (the client closes its side after sending), at most MAX_REQUEST_BYTES."""
    chunks, size = [], 0
    while chunk := await reader.read(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise ConnectionError("request too large")
    return b"".join(chunks)


def _as_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --- client side (any process) ------------------------------------------------------------


class Reader:
    """The `.query` of a clickhouse-connect client, answered by a worker's gateway."""

    def __init__(self, path: str, timeout: float = QUERY_TIMEOUT):
        self.path, self.timeout = path, timeout

    def answers(self) -> bool:
        try:
            return "pong" in self._exchange(b"", PING_TIMEOUT)
        except (OSError, ValueError):
            return False

    def query(self, sql: str, parameters: dict | None = None) -> Result:
        try:
            answer = self._exchange(orjson.dumps({"sql": sql, "parameters": parameters}), self.timeout)
        except (OSError, ValueError) as exc:
            raise Unavailable("ClickHouse", f"query gateway {self.path}: {exc}") from exc
        if "error" in answer:
            raise QueryFailed(answer["error"])
        return Result(tuple(answer["columns"]), [tuple(row) for row in answer["rows"]])

    def close(self) -> None:
        """Nothing held between queries; here so a Reader closes like a client."""

    def _exchange(self, request: bytes, timeout: float) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.path)
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(1 << 20):
                chunks.append(chunk)
        return orjson.loads(b"".join(chunks))
