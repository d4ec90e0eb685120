"""ClickHouse through clickhouse-connect: embedded chdb (`chdb:///dir`) or a server (`http://…`).

Opens the client, applies schema/NNNN_*.sql in order, and runs the queries that read the usage
log. The client is synchronous (chdb has no async API): async callers use asyncio.to_thread.
Failures leave as `Unavailable`.

Readers call `open_reader(url)`: a chdb directory can be open in one process at a time and the
ingest worker holds it, so for chdb:// the reader is a clickhouse-connect HTTP client of the
worker's HTTP interface (storage/clickhouse/http_interface.py) when the worker holds the
directory, and opens the directory itself only when no process does.
"""

import fcntl
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import httpx
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from storage.clickhouse import http_interface
from storage.errors import StorageError, Unavailable

SCHEMA = Path(__file__).parent / "schema"
# FINAL: rows a replay duplicated may not be merged yet; FINAL collapses them before summing.
# Bounds in epoch milliseconds, so no time zone is ever guessed from a parameter.
METERED_USAGE = """
SELECT workspace_id, feature, sum(quantity) AS used
FROM usage_events FINAL
WHERE occurred_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')
  AND occurred_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
  AND feature IN {features:Array(String)}
  AND ({workspace_id:Nullable(UInt64)} IS NULL OR workspace_id = {workspace_id:Nullable(UInt64)})
GROUP BY workspace_id, feature"""
# A statement ends with ';' at the end of a line; a file may hold several (the HTTP interface and
# chdb take one statement per call).
STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
EVENTS_TTL = re.compile(r"TTL toDateTime\(time\) \+ toIntervalDay\((\d+)\)")
TABLE_DDL = "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = {name:String}"
# readonly=2 refuses every write but lets a query set its own settings (max_threads, …).
READ_ONLY = {"readonly": 2}
# A worker may be slow to answer while it starts or its loop encodes a large batch: ask again this
# often, for this long, rather than open a directory it holds.
WORKER_WAIT, WORKER_RETRY, PING_TIMEOUT = 30.0, 0.5, 2.0


class QueryFailed(StorageError):
    """ClickHouse refused the query (syntax, unknown table, a write asked of a read-only reader)."""


@dataclass(frozen=True)
class Endpoint:
    """A ClickHouse HTTP interface: a server's, or the ingest worker's for its chdb directory."""

    url: str  # scheme://host:port, no credentials
    user: str
    password: str
    database: str | None = None


def connect(url: str, settings: dict | None = None):
    try:
        return clickhouse_connect.get_client(dsn=url, settings=settings)
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc


def open_reader(url: str, wait: float = WORKER_WAIT):
    """Something with `.query(sql, parameters=None)` → `.column_names`, `.result_rows`, refusing writes.

    chdb:// goes through the worker's HTTP interface while a worker holds the directory, asked
    again for up to `wait` seconds when slow to answer, never bypassed (opening the directory
    would fail on its lock); the directory is opened here only when no process holds it (which
    then keeps a worker out until this process ends). http:// is always direct.
    """
    worker = worker_endpoint(chdb_directory(url), wait) if url.startswith("chdb:") else None
    if worker is not None:
        return _worker_reader(worker)
    try:
        return DirectReader(clickhouse_connect.get_client(dsn=url, settings=READ_ONLY))
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc


def worker_reader(url: str) -> "WorkerReader | None":
    """A reader of the worker holding chdb:// `url` if its HTTP interface answers now; None
    otherwise (never the directory itself: for callers racing a worker that is starting)."""
    worker = answering_worker(chdb_directory(url))
    return _worker_reader(worker) if worker is not None else None


def _worker_reader(worker: Endpoint) -> "WorkerReader":
    host, port = http_interface.parse_address(worker.url.split("://", 1)[1])
    try:
        client = clickhouse_connect.get_client(
            host=host, port=port, username=worker.user, password=worker.password, settings=READ_ONLY
        )
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc
    return WorkerReader(client)


def worker_endpoint(directory: str, wait: float = WORKER_WAIT) -> Endpoint | None:
    """The HTTP interface of the worker holding `directory`; None when no process holds it.
    Unavailable when one does but its interface does not answer within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        found = answering_worker(directory)
        if found is not None:
            return found
        if not held_elsewhere(directory):
            return None
        if time.monotonic() >= deadline:
            raise Unavailable(
                "ClickHouse",
                f"{directory} is open in another process (an ingest worker?) whose HTTP interface "
                f"(SLUICE_CLICKHOUSE_HTTP) did not answer for {wait:.0f} s",
            )
        time.sleep(WORKER_RETRY)


def answering_worker(directory: str) -> Endpoint | None:
    """The worker's interface from its key file, if it answers a ping now."""
    info = http_interface.read_key_file(directory)
    if info is None:
        return None
    try:
        ok = httpx.get(f"{info['url']}/ping", timeout=PING_TIMEOUT).status_code == 200
    except httpx.HTTPError:
        return None
    return Endpoint(info["url"], info["user"], info["key"]) if ok else None


def server_endpoint(url: str) -> Endpoint:
    """http(s)://user:pass@host:port/db → its HTTP interface; percent-escapes decoded, as clickhouse-connect does."""
    parts = urlsplit(url)
    port = parts.port or (8443 if parts.scheme == "https" else 8123)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    database = unquote(parts.path.strip("/")) or None
    user, password = unquote(parts.username or "") or "default", unquote(parts.password or "")
    return Endpoint(f"{parts.scheme}://{host}:{port}", user, password, database)


class ClientReader:
    """A read-only clickhouse-connect client; its errors leave as `Unavailable` or `QueryFailed`."""

    def __init__(self, client):
        self.client = client

    def query(self, sql: str, parameters: dict | None = None):
        try:
            return self.client.query(sql, parameters=parameters)
        except OperationalError as exc:
            raise Unavailable("ClickHouse", str(exc)) from exc
        except ClickHouseError as exc:
            raise QueryFailed(str(exc)) from exc

    def close(self) -> None:
        self.client.close()


class DirectReader(ClientReader):
    """Reads ClickHouse itself: a server, or a chdb directory no other process holds."""


class WorkerReader(ClientReader):
    """Reads through the HTTP interface of the ingest worker holding the chdb directory."""


def held_elsewhere(directory: str) -> bool:
    """Whether an embedded ClickHouse engine has `directory` open: it keeps an exclusive flock on
    its `status` file for as long as it runs (what "Cannot lock file …/status" refers to)."""
    try:
        fd = os.open(os.path.join(directory, "status"), os.O_RDONLY)
    except OSError:
        return False  # never opened, or not readable by us: opening it will say which
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock, if taken
    return False


def chdb_directory(url: str) -> str:
    """chdb:///abs/dir → /abs/dir (the form clickhouse-connect reads)."""
    parts = urlsplit(url)
    return parts.netloc + parts.path if parts.netloc else parts.path


def apply_schema(client) -> list[str]:
    """Run every schema file in name order; each statement is idempotent (IF NOT EXISTS), so reruns are no-ops."""
    files = sorted(SCHEMA.glob("*.sql"))
    for path in files:
        for statement in statements(path.read_text()):
            _run(client.command, statement)
    return [path.name for path in files]


def statements(text: str) -> list[str]:
    """The statements of a schema file, comments-only chunks left out."""
    chunks = (chunk.strip() for chunk in STATEMENT_END.split(text))
    return [c for c in chunks if any(line.strip() and not line.strip().startswith("--") for line in c.splitlines())]


def set_events_ttl(client, days: int) -> bool:
    """Make `events` keep rows `days` days; True when it changed (an ALTER only then, as the
    change rewrites the TTL information of every part)."""
    ddl = _run(client.query, TABLE_DDL, parameters={"name": "events"}).result_rows[0][0]
    current = EVENTS_TTL.search(ddl)
    if current and int(current.group(1)) == days:
        return False
    _run(client.command, f"ALTER TABLE events MODIFY TTL toDateTime(time) + INTERVAL {int(days)} DAY")
    return True


def metered_usage(
    client, features: list[str], start: datetime, end: datetime, workspace_id: int | None = None
) -> dict[tuple[int, str], int]:
    """(workspace id, feature) → quantity logged in [start, end); pairs with none are absent."""
    params = {"start": _millis(start), "end": _millis(end), "features": features, "workspace_id": workspace_id}
    result = _run(client.query, METERED_USAGE, parameters=params)
    return {(int(ws), feature): int(used) for ws, feature, used in result.result_rows}


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _run(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc
