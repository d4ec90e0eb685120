"""Storage stage "read over HTTP": ClickHouse's own HTTP interface, read-only, for the embedded engine.

Only the process holding a chdb directory can query it, and the ingest worker holds it; so the
worker serves the subset of ClickHouse's HTTP interface that reading needs, and any ClickHouse
client (clickhouse-connect, @clickhouse/client, curl) reads through it: `GET /?query=…`,
`POST /` with the query in the body, FORMAT and `default_format`, `database`, `query_id`,
`param_*`, other parameters as settings, `/ping`, and ClickHouse's error bodies and codes.

HTTP/1.1 is parsed by h11 inside the worker's event loop; queries run on a few reader threads,
each with its own chdb session (storage/clickhouse/readers.py), never on the writer's thread. A
result streams out chunk by chunk as the engine produces it, and the query is cancelled when the
client goes away. Internal readers authenticate as `sluice` with the key the worker writes to
DIR/.sluice-http-key at start (the directory's owner is the only one who can read the data anyway).
Each query's outcome and duration go to an observer the worker passes in (its metrics).

`Settings.writable` (tests/clickhouse_server.py only; no worker setting reaches it) makes the same
server a stand-in for a ClickHouse server: a query that does not ask for `readonly` runs on a
writable session (storage/clickhouse/writable.py), INSERT rows in the body included.
"""

import asyncio
import base64
import contextlib
import enum
import hashlib
import hmac
import ipaddress
import logging
import os
import queue
import secrets
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson

from storage.clickhouse import readers
from storage.clickhouse.readers import Checked, Limits, QueryError, ReaderConnection
from storage.clickhouse.writable import WritableSession
from storage.clickhouse.writer import INSERTS

log = logging.getLogger(__name__)

KEY_FILE = ".sluice-http-key"
INTERNAL_USER = "sluice"
# A query is text: ClickHouse's own max_query_size is 256 KiB; the body may hold a little more.
MAX_REQUEST_BYTES = 1 << 20
# Queries waiting for a reader thread, per thread, before TOO_MANY_SIMULTANEOUS_QUERIES.
QUEUED_PER_READER = 2
# Chunks a reader thread produces ahead of the client: a slow client holds a few blocks, not a result.
CHUNKS_AHEAD = 4
IDLE_SECONDS = 30.0
# How long a query waits for the INSERT in progress (about a second for 100k rows) to end.
INSERT_WAIT = 30.0
# The HTTP interface's own parameters, not settings (what clickhouse-connect and @clickhouse/client send).
HTTP_PARAMS = frozenset(
    {"query", "session_id", "session_timeout", "session_check", "compress", "decompress", "wait_end_of_query"}
    | {"send_progress_in_http_headers", "http_headers_progress_interval_ms", "query_id", "database"}
    | {"default_format", "user", "password", "buffer_size", "client_protocol_version", "role", "quota_key"}
)
CONTENT_TYPES = (
    (("TabSeparated", "TSV"), "text/tab-separated-values; charset=UTF-8"),
    (("CSV",), "text/csv; charset=UTF-8"),
    (("JSON",), "application/json; charset=UTF-8"),
    (("Pretty", "Vertical", "Markdown", "Template"), "text/plain; charset=UTF-8"),
    (("XML",), "application/xml; charset=UTF-8"),
)
# HTTP status of a ClickHouse error code, as its exceptionCodeToHTTPStatus chooses it.
STATUS_BY_CODE = {
    readers.REQUIRED_PASSWORD: 401,
    readers.AUTHENTICATION_FAILED: 403,
    readers.READONLY: 403,
    readers.ACCESS_DENIED: 403,
    readers.SETTING_CONSTRAINT_VIOLATION: 403,
    readers.TOO_MANY_SIMULTANEOUS_QUERIES: 503,
    readers.TIMEOUT_EXCEEDED: 408,
    readers.SYNTAX_ERROR: 400,
    readers.BAD_ARGUMENTS: 400,
    readers.UNKNOWN_SETTING: 404,
    27: 400,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    47: 404,  # UNKNOWN_IDENTIFIER
    46: 404,  # UNKNOWN_FUNCTION
    50: 404,  # UNKNOWN_TYPE
    60: 404,  # UNKNOWN_TABLE
    73: 404,  # UNKNOWN_FORMAT
    81: 404,  # UNKNOWN_DATABASE
    456: 400,  # UNKNOWN_QUERY_PARAMETER
    457: 400,  # BAD_QUERY_PARAMETER
}


class QueryOutcome(enum.StrEnum):
    """How a query ended, for `sluice_clickhouse_queries_total{outcome}`."""

    OK = "ok"
    ERROR = "error"  # the engine failed it (syntax, unknown table, …), or the client left mid-answer
    REFUSED = "refused"  # not authenticated, or not a read, or loosening a limit
    TIMEOUT = "timeout"  # past max_execution_time
    BUSY = "busy"  # every reader taken and the queue full


REFUSALS = frozenset(
    {
        readers.REQUIRED_PASSWORD,
        readers.AUTHENTICATION_FAILED,
        readers.READONLY,
        readers.ACCESS_DENIED,
        readers.SETTING_CONSTRAINT_VIOLATION,
    }
)
# outcome, and seconds from request to the end of the answer (None when no reader saw the query)
QueryObserver = Callable[[QueryOutcome, float | None], None]


def outcome_of(error: QueryError) -> QueryOutcome:
    if error.code in REFUSALS:
        return QueryOutcome.REFUSED
    if error.code == readers.TIMEOUT_EXCEEDED:
        return QueryOutcome.TIMEOUT
    if error.code == readers.TOO_MANY_SIMULTANEOUS_QUERIES:
        return QueryOutcome.BUSY
    return QueryOutcome.ERROR


def _unobserved(outcome: QueryOutcome, seconds: float | None) -> None:
    pass


@dataclass(frozen=True)
class Settings:
    """Where to listen (host, port; port 0 picks one), who may read, and what a query may use."""

    host: str
    port: int
    users: Mapping[str, str] = field(default_factory=dict)  # name → sha256 hex of the password
    limits: Limits = field(default_factory=Limits)
    readers: int = 2
    # A stand-in ClickHouse server for tests (tests/clickhouse_server.py): writes too, for clients
    # that do not ask for readonly, and request bodies as large as an INSERT's rows.
    writable: bool = False
    max_request_bytes: int = MAX_REQUEST_BYTES


def parse_address(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def key_file(directory: str) -> Path:
    return Path(directory) / KEY_FILE


def read_key_file(directory: str) -> dict | None:
    """{"url", "user", "key"} a worker wrote for `directory`, or None."""
    try:
        return orjson.loads(key_file(directory).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


class Authenticator:
    """Who may query: the internal reader (the key file's key), configured analysts, and, when
    none are configured, anyone on this machine (a loopback peer)."""

    def __init__(self, users: Mapping[str, str], internal_key: str):
        self.hashes = {**users, INTERNAL_USER: _sha256(internal_key)}
        self.analysts = bool(users)

    def check(self, user: str | None, password: str, peer: str) -> None:
        expected = self.hashes.get(user or "")
        if expected is not None:
            if not hmac.compare_digest(_sha256(password), expected):
                raise QueryError(readers.AUTHENTICATION_FAILED, f"{user}: Authentication failed: password is incorrect")
            return
        if _loopback(peer) and not self.analysts:
            return
        if user is None and not password:
            raise QueryError(readers.REQUIRED_PASSWORD, "Authentication required: give a user and a password")
        raise QueryError(readers.AUTHENTICATION_FAILED, f"{user or 'default'}: Authentication failed")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _loopback(peer: str) -> bool:
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


@dataclass
class Query:
    sql: str
    format: str
    params: dict[str, str]
    settings: dict[str, str]
    database: str | None
    query_id: str


class Session(Protocol):
    """What a reader thread answers a query with: a ReaderConnection, or a WritableSession."""

    written: tuple[int, int]  # rows, bytes the last query wrote

    def use(self, database: str) -> None: ...

    def check(self, sql: str, params: Mapping[str, str] | None = None) -> Checked: ...

    def stream(
        self, checked: Checked, fmt: str, params: Mapping[str, str], settings: Mapping[str, str]
    ) -> Generator[bytes, None, None]: ...

    def close(self) -> None: ...


def asks_readonly(query: Query) -> bool:
    return query.settings.get("readonly", "0").strip() not in ("", "0")


class Cancelled(Exception):
    """The client went away; the reader thread stops its query."""


class Job:
    """One query between a reader thread (producing events) and the event loop (sending them)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, query: Query):
        self.loop, self.query, self.format = loop, query, query.format
        self.events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self.room = threading.Semaphore(CHUNKS_AHEAD)
        self.cancelled = threading.Event()
        self.error: QueryError | None = None  # the error the client was sent
        self.ended = False  # the whole answer was sent
        self.written = (0, 0)  # rows, bytes, as the session reported them before the answer's first event

    def outcome(self) -> QueryOutcome:
        if self.error is not None:
            return outcome_of(self.error)
        return QueryOutcome.OK if self.ended else QueryOutcome.ERROR

    def emit(self, kind: str, value: object = None) -> None:
        while not self.room.acquire(timeout=0.5):
            if self.cancelled.is_set():
                raise Cancelled
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    async def next(self) -> tuple[str, object]:
        event = await self.events.get()
        self.room.release()
        return event


class ReaderPool:
    """`size` threads, each with its own ReaderConnection; at most `size * (1 + QUEUED_PER_READER)` queries in."""

    def __init__(self, directory: str, limits: Limits, size: int, writable: bool = False):
        self.directory, self.limits, self.size, self.writable = directory, limits, size, writable
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.inflight, self.threads = 0, [threading.Thread(target=self._run, daemon=True) for _ in range(size)]
        self.ready = threading.Barrier(size + 1)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        self.ready.wait()

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join(10)

    def submit(self, job: Job) -> bool:
        if self.inflight >= self.size * (1 + QUEUED_PER_READER):
            return False
        self.inflight += 1
        self.jobs.put(job)
        return True

    def done(self) -> None:
        self.inflight -= 1

    def _run(self) -> None:
        conn = ReaderConnection(self.directory, self.limits)
        writer = WritableSession(self.directory) if self.writable else None
        self.ready.wait()
        try:
            while (job := self.jobs.get()) is not None:
                # Between INSERTs, so a batch is in every table or in none (a slower one: go ahead).
                INSERTS.wait_idle(INSERT_WAIT)
                _answer(writer if writer is not None and not asks_readonly(job.query) else conn, job)
        finally:
            conn.close()
            if writer is not None:
                writer.close()


def _answer(conn: Session, job: Job) -> None:
    q = job.query
    try:
        if job.cancelled.is_set():
            return
        if q.database:
            conn.use(q.database)
        checked = conn.check(q.sql, q.params)
        job.format = checked.format or q.format
        with contextlib.closing(conn.stream(checked, q.format, q.params, q.settings)) as chunks:
            for chunk in chunks:
                job.written = conn.written
                if chunk:
                    job.emit("data", chunk)
        job.written = conn.written
        job.emit("end")
    except QueryError as exc:
        with contextlib.suppress(Cancelled):
            job.emit("error", exc)
    except Cancelled:
        pass
    except Exception as exc:  # noqa: BLE001 - the client's answer, never the worker's crash
        log.exception("query %s failed", q.query_id)
        with contextlib.suppress(Cancelled):
            job.emit("error", QueryError(1001, str(exc), "STD_EXCEPTION"))
    finally:
        if q.database:
            with contextlib.suppress(QueryError):
                conn.use("default")


class HttpInterface:
    """The server: `start()` listens and writes the key file, `close()` stops both."""

    def __init__(self, directory: str, settings: Settings, observe: QueryObserver = _unobserved):
        self.directory, self.settings, self.observe = directory, settings, observe
        self.key = secrets.token_urlsafe(32)
        self.auth = Authenticator(settings.users, self.key)
        self.pool = ReaderPool(directory, settings.limits, settings.readers, settings.writable)
        self.display_name = socket.gethostname()
        self._server: asyncio.AbstractServer | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        host = self.settings.host
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; OSError when the address is taken (the caller names the variable)."""
        self._server = await asyncio.start_server(self._serve, self.settings.host, self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        await asyncio.to_thread(self.pool.start)
        self._write_key_file()

    async def close(self) -> None:
        key_file(self.directory).unlink(missing_ok=True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await asyncio.to_thread(self.pool.close)

    def _write_key_file(self) -> None:
        path = key_file(self.directory)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(orjson.dumps({"url": self.url, "user": INTERNAL_USER, "key": self.key}))

    # --- one connection: requests in turn (keep-alive) -------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        peer = (writer.get_extra_info("peername") or ("",))[0]
        try:
            while True:
                request = await self._read_request(conn, reader, writer)
                if request is None:
                    break
                await self._respond(conn, reader, writer, peer, *request)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, TimeoutError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass  # the client went away or spoke no HTTP: nothing left to tell it
        finally:
            writer.close()

    async def _read_request(self, conn, reader, writer) -> tuple[h11.Request, bytes] | None:
        request, body = None, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                data = await asyncio.wait_for(reader.read(1 << 16), IDLE_SECONDS)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.settings.max_request_bytes:
                    too_large = QueryError(readers.SYNTAX_ERROR, "Max query size exceeded")
                    self.observe(outcome_of(too_large), None)
                    await self._send_error(conn, writer, too_large, 413)
                    return None
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return request, bytes(body)
            else:
                return None

    async def _respond(self, conn, reader, writer, peer: str, request: h11.Request, body: bytes) -> None:
        target = urlsplit(request.target.decode("latin-1"))
        params = dict(parse_qsl(target.query, keep_blank_values=True))
        headers = {name.decode().lower(): value.decode("latin-1") for name, value in request.headers}
        if target.path not in ("/", "/ping", "/query"):
            await self._send(
                conn, writer, 404, b"There is no handle " + target.path.encode() + b"\n\nUse / or /ping.\n"
            )
            return
        if target.path == "/ping" or (request.method in (b"GET", b"HEAD") and "query" not in params):
            await self._send(conn, writer, 200, b"Ok.\n")
            return
        try:
            self._authenticate(headers, params, peer)
            query = self._query(params, headers, body)
        except QueryError as exc:
            self.observe(outcome_of(exc), None)
            await self._send_error(conn, writer, exc)
            return
        await self._run(conn, reader, writer, query)

    def _authenticate(self, headers: dict, params: dict, peer: str) -> None:
        user, password = headers.get("x-clickhouse-user"), headers.get("x-clickhouse-key", "")
        basic = headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                raise QueryError(readers.AUTHENTICATION_FAILED, "Malformed Basic credentials") from None
        if "user" in params:
            user, password = params["user"], params.get("password", "")
        self.auth.check(user, password, peer)

    def _query(self, params: dict, headers: dict, body: bytes) -> Query:
        encoding = headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            try:
                body = zlib.decompress(body, 47)
            except zlib.error as exc:
                raise QueryError(readers.BAD_ARGUMENTS, f"Cannot decompress the request body: {exc}") from None
        elif encoding:
            raise QueryError(readers.BAD_ARGUMENTS, f"Unsupported Content-Encoding {encoding}")
        text = body.decode("utf-8", "replace")
        sql = "\n".join(part for part in (params.get("query", ""), text) if part)
        return Query(
            sql=sql,
            format=params.get("default_format") or headers.get("x-clickhouse-format") or "TabSeparated",
            params={k[6:]: v for k, v in params.items() if k.startswith("param_")},
            settings={k: v for k, v in params.items() if k not in HTTP_PARAMS and not k.startswith("param_")},
            database=params.get("database") or headers.get("x-clickhouse-database") or None,
            query_id=params.get("query_id") or str(uuid.uuid4()),
        )

    async def _run(self, conn, reader, writer, query: Query) -> None:
        started = time.monotonic()
        job = Job(asyncio.get_running_loop(), query)
        if not self.pool.submit(job):
            busy = QueryError(readers.TOO_MANY_SIMULTANEOUS_QUERIES, "Too many simultaneous queries, try again")
            self.observe(QueryOutcome.BUSY, None)
            await self._send_error(conn, writer, busy, query_id=query.query_id)
            return
        # A read on the socket while the query runs: EOF means the client left (cancel the query).
        gone = asyncio.create_task(reader.read(1 << 16))
        try:
            await self._stream(conn, writer, job, gone)
        finally:
            job.cancelled.set()
            self.pool.done()
            self.observe(job.outcome(), time.monotonic() - started)
            if gone.done() and not gone.cancelled() and gone.result():
                conn.receive_data(gone.result())  # the client's next request, pipelined
            else:
                gone.cancel()

    async def _stream(self, conn, writer, job: Job, gone: asyncio.Task) -> None:
        kind, value = await self._next(job, gone)
        if kind == "error":
            assert isinstance(value, QueryError)
            job.error = value
            await self._send_error(conn, writer, value, query_id=job.query.query_id)
            return
        await self._send_head(conn, writer, 200, self._headers(job))
        while kind == "data":
            assert isinstance(value, bytes)
            writer.write(conn.send(h11.Data(data=value)))
            await writer.drain()
            kind, value = await self._next(job, gone)
        if kind == "error":
            # Headers are gone: ClickHouse too writes the exception into the body and breaks the stream.
            assert isinstance(value, QueryError)
            job.error = value
            writer.write(conn.send(h11.Data(data=f"\n{value.text()}\n".encode())))
            await writer.drain()
            raise ConnectionError("query failed mid-stream")
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        job.ended = True

    async def _next(self, job: Job, gone: asyncio.Task) -> tuple[str, object]:
        event = asyncio.ensure_future(job.next())
        await asyncio.wait({event, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not event.done() and gone.done() and not gone.result():
            event.cancel()
            raise ConnectionError("client went away")
        return await event

    def _headers(self, job: Job) -> list[tuple[str, str]]:
        rows, size = job.written
        summary = {"read_rows": "0", "read_bytes": "0", "written_rows": str(rows), "written_bytes": str(size)}
        return [
            ("Content-Type", content_type(job.format)),
            ("X-ClickHouse-Format", job.format),
            ("X-ClickHouse-Query-Id", job.query.query_id),
            ("X-ClickHouse-Timezone", "UTC"),
            ("X-ClickHouse-Summary", orjson.dumps({**summary, "total_rows_to_read": "0"}).decode()),
        ]

    async def _send_error(self, conn, writer, exc: QueryError, status: int | None = None, query_id: str = "") -> None:
        headers = [("X-ClickHouse-Exception-Code", str(exc.code)), ("Content-Type", "text/plain; charset=UTF-8")]
        if query_id:
            headers.append(("X-ClickHouse-Query-Id", query_id))
        await self._send(conn, writer, status or STATUS_BY_CODE.get(exc.code, 500), f"{exc.text()}\n".encode(), headers)

    async def _send(self, conn, writer, status: int, body: bytes, headers: list | None = None) -> None:
        headers = [*(headers or [("Content-Type", "text/plain; charset=UTF-8")]), ("Content-Length", str(len(body)))]
        await self._send_head(conn, writer, status, headers)
        if conn.our_state is h11.SEND_BODY:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _send_head(self, conn, writer, status: int, headers: list[tuple[str, str]]) -> None:
        common = [
            ("X-ClickHouse-Server-Display-Name", self.display_name),
            ("Keep-Alive", f"timeout={IDLE_SECONDS:.0f}"),
        ]
        reason = HTTPStatus(status).phrase.encode()
        writer.write(conn.send(h11.Response(status_code=status, headers=[*headers, *common], reason=reason)))


def content_type(fmt: str) -> str:
    for prefixes, value in CONTENT_TYPES:
        if fmt.startswith(prefixes):
            return value
    return "application/octet-stream"
