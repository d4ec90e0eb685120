"""ClickHouse through clickhouse-connect: embedded chdb (`chdb:///dir`) or a server (`http://…`).

Opens the client, applies schema/NNNN_*.sql in order, and runs the queries that read the usage
log. The client is synchronous (chdb has no async API): async callers use asyncio.to_thread.
Failures leave as `Unavailable`.
"""

from datetime import datetime
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

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


def connect(url: str):
    try:
        return clickhouse_connect.get_client(dsn=url)
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc


def apply_schema(client) -> list[str]:
    """Run every schema file in name order; each is CREATE … IF NOT EXISTS, so reruns are no-ops."""
    files = sorted(SCHEMA.glob("*.sql"))
    for path in files:
        _run(client.command, path.read_text())
    return [path.name for path in files]


def metered_usage(client, features: list[str], start: datetime, end: datetime,
                  workspace_id: int | None = None) -> dict[tuple[int, str], int]:
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
