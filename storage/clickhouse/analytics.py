"""Storage: read-only analytics over one workspace's rows in ClickHouse (the MCP `analytics` server).

Every query is a constant here with typed bind parameters; the workspace id is always one of them
and comes from the caller's API key, never from tool arguments. Counts use uniqExact(event_id), so
a replayed event not yet merged away is counted once whatever the table engine. Synchronous:
async callers use asyncio.to_thread.
"""

from datetime import datetime

from clickhouse_connect.driver.exceptions import ClickHouseError

from storage.clickhouse import client as clickhouse
from storage.clickhouse.gateway import QueryFailed
from storage.errors import Unavailable

# A result an assistant can read in one go; the tools' schemas cap `limit` at this too.
MAX_ROWS = 100
RANGE = """workspace_id = {workspace_id:UInt64}
  AND time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')
  AND time < fromUnixTimestamp64Milli({end:Int64}, 'UTC')"""
EVENT_COUNTS = f"""
SELECT event, uniqExact(event_id) AS events
FROM events WHERE {RANGE}
  AND ({{event:Nullable(String)}} IS NULL OR event = {{event:Nullable(String)}})
GROUP BY event ORDER BY events DESC, event LIMIT {{limit:UInt32}}"""
TOP_PAGES = f"""
SELECT path, uniqExact(event_id) AS events, uniqExact(visitor_id) AS visitors
FROM events WHERE {RANGE} AND event = {{event:String}}
GROUP BY path ORDER BY events DESC, path LIMIT {{limit:UInt32}}"""
UNIQUE_VISITORS = f"""
SELECT toDate(time, 'UTC') AS day, uniqExact(visitor_id) AS visitors
FROM events WHERE {RANGE}
GROUP BY day ORDER BY day LIMIT {{limit:UInt32}}"""
UNIQUE_VISITORS_TOTAL = f"SELECT uniqExact(visitor_id) AS visitors FROM events WHERE {RANGE}"
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


def event_counts(
    reader, workspace_id: int, start: datetime, end: datetime, event: str | None, limit: int
) -> list[dict]:
    """[{event, events}] most frequent first."""
    return _rows(reader, EVENT_COUNTS, _params(workspace_id, start, end, limit, event=event))


def top_pages(reader, workspace_id: int, start: datetime, end: datetime, event: str, limit: int) -> list[dict]:
    """[{path, events, visitors}] for one event name (pageview by default), busiest first."""
    return _rows(reader, TOP_PAGES, _params(workspace_id, start, end, limit, event=event))


def unique_visitors(reader, workspace_id: int, start: datetime, end: datetime) -> tuple[int, list[dict]]:
    """(visitors over the whole range, [{day, visitors}] per UTC day, at most MAX_ROWS days)."""
    params = _params(workspace_id, start, end, MAX_ROWS)
    total = _rows(reader, UNIQUE_VISITORS_TOTAL, params)
    return (int(total[0]["visitors"]) if total else 0), _rows(reader, UNIQUE_VISITORS, params)


def feature_usage(
    reader, workspace_id: int, start: datetime, end: datetime, feature: str | None, limit: int
) -> list[dict]:
    """[{feature, quantity, records}] largest first."""
    return _rows(reader, FEATURE_USAGE, _params(workspace_id, start, end, limit, feature=feature))
