"""ClickHouse through clickhouse-connect: embedded chdb (`chdb:///dir`) or a server (`http://…`).

Opens the client, applies schema/NNNN_*.sql in order, and runs the queries that read the usage
log. The client is synchronous (chdb has no async API): async callers use asyncio.to_thread.
Failures leave as `Unavailable`.

Readers call `open_reader(url)`: a chdb directory can be open in one process at a time and the
ingest worker holds it, so for chdb:// the reader asks the worker's query gateway
(storage/clickhouse/gateway.py) when it answers, and opens the directory itself otherwise.
"""

import fcntl
import os
import re
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from storage.clickhouse import gateway
from storage.errors import Unavailable

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
# A worker's gateway may be slow to answer while its loop encodes a large batch: ask again this
# often, for this long, rather than open a directory it holds.
GATEWAY_WAIT, GATEWAY_RETRY = 30.0, 0.5


def connect(url: str, settings: dict | None = None):
    try:
        return clickhouse_connect.get_client(dsn=url, settings=settings)
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc


def open_reader(url: str, wait: float = GATEWAY_WAIT):
    """Something with `.query(sql, parameters=None)` → `.column_names`, `.result_rows`, refusing writes.

    chdb:// goes through the worker's gateway when it answers. The directory is opened here only
    when no process holds it (which then keeps a worker out until this process ends): while a
    worker does, a gateway slow to answer a ping (its loop busy with a large batch) is asked again
    for up to `wait` seconds, never bypassed — opening the directory would fail on its lock.
    http:// is always direct.
    """
    if url.startswith("chdb:"):
        directory = chdb_directory(url)
        reader = gateway.Reader(gateway.socket_path(directory))
        deadline = time.monotonic() + wait
        while not reader.answers():
            if not held_elsewhere(directory):
                break
            if time.monotonic() >= deadline:
                raise Unavailable(
                    "ClickHouse",
                    f"{directory} is open in another process (an ingest worker?) whose query gateway "
                    f"did not answer for {wait:.0f} s",
                )
            time.sleep(GATEWAY_RETRY)
        else:
            return reader
    try:
        return DirectReader(clickhouse_connect.get_client(dsn=url, settings=READ_ONLY))
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc


class DirectReader:
    """A read-only clickhouse-connect client whose errors read like the gateway's."""

    def __init__(self, client):
        self.client = client

    def query(self, sql: str, parameters: dict | None = None):
        try:
            return self.client.query(sql, parameters=parameters)
        except OperationalError as exc:
            raise Unavailable("ClickHouse", str(exc)) from exc
        except ClickHouseError as exc:
            raise gateway.QueryFailed(str(exc)) from exc

    def close(self) -> None:
        self.client.close()


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
