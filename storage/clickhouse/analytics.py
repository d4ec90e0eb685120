"""Storage: one workspace's metered usage in ClickHouse (the MCP `analytics` server's feature_usage;
its other tools are Stats API queries, storage/clickhouse/stats.py).

The query is a constant with typed bind parameters; the workspace id is always one of them and
comes from the caller's API key, never from tool arguments. Synchronous: async callers use
asyncio.to_thread.
"""

from datetime import datetime

from clickhouse_connect.driver.exceptions import ClickHouseError

from storage.clickhouse import client as clickhouse
from storage.clickhouse.client import QueryFailed
from storage.errors import Unavailable

# A result an assistant can read in one go; the tools' schemas cap `limit` at this too.
MAX_ROWS = 100
# FINAL: usage_events is a ReplacingMergeTree; replayed rows collapse before summing.
FEATURE_USAGE = """
SELECT feature, sum(quantity) AS quantity, count() AS records
FROM usage_events FINAL
WHERE workspace_id = {workspace_id:UInt64}
  AND occurred_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')
  AND occurred_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
  AND ({feature:Nullable(String)} IS NULL OR feature = {feature:Nullable(String)})
GROUP BY feature ORDER BY quantity DESC, feature LIMIT {limit:UInt32}"""


def open_reader(url: str):
    """A read-only client; with chdb it goes through the ingest worker when the worker holds the directory."""
    return clickhouse.open_reader(url)


def close_reader(reader) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()  # chdb: frees the directory for the process that owns it


def _params(workspace_id: int, start: datetime, end: datetime, limit: int, **extra) -> dict:
    return {
        "workspace_id": workspace_id,
        "start": int(start.timestamp() * 1000),
        "end": int(end.timestamp() * 1000),
        "limit": min(limit, MAX_ROWS),
        **extra,
    }


def _rows(reader, sql: str, params: dict) -> list[dict]:
    try:
        result = reader.query(sql, parameters=params)
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc
    except QueryFailed as exc:
        # These queries are ours and valid: ClickHouse refusing one means it is not ready, e.g.
        # its tables do not exist yet because no ingest worker has run against it.
        raise Unavailable("ClickHouse", str(exc)) from exc
    names = result.column_names
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


def feature_usage(
    reader, workspace_id: int, start: datetime, end: datetime, feature: str | None, limit: int
) -> list[dict]:
    """[{feature, quantity, records}] largest first."""
    return _rows(reader, FEATURE_USAGE, _params(workspace_id, start, end, limit, feature=feature))
