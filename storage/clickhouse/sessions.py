"""Storage: what the consumer's session state (ingest/worker/sessions.py) is rebuilt from.

Synchronous, like storage/clickhouse/writer.py: run on the one ClickHouse thread.
"""

from clickhouse_connect.driver.exceptions import ClickHouseError

from storage.errors import Unavailable

# The newest arrival among each partition's session events (ingest/worker/sessions.py's W).
WATERMARKS = """
SELECT _partition, toUnixTimestamp64Milli(max(last_received))
FROM sessions_state
WHERE _partition IN {partitions:Array(UInt32)}
GROUP BY _partition"""
# Sessions with an event that arrived since `since`, whole: their rows in other parts count too.
OPEN_SESSIONS = """
SELECT max(_partition), workspace_id, session_id,
       groupUniqArrayMerge(8)(visitor_ids),
       toUnixTimestamp64Milli(min(first_time)), toUnixTimestamp64Milli(max(last_time)),
       toUnixTimestamp64Milli(max(last_received))
FROM sessions_state
WHERE (workspace_id, session_id) IN (
    SELECT workspace_id, session_id FROM sessions_state
    WHERE _partition IN {partitions:Array(UInt32)}
      AND last_received >= fromUnixTimestamp64Milli({since:Int64})
      AND session_id < 9223372036854775808)
GROUP BY workspace_id, session_id"""

OpenSession = tuple[int, list[str], int, int, int, int]  # workspace, visitor ids, id, start, end, last arrival


def open_sessions(client, partitions: list[int], horizon_ms: int) -> dict[int, tuple[int, list[OpenSession]]]:
    """partition → (its newest arrival in epoch ms, the sessions with an arrival within horizon_ms of it)."""
    try:
        marks = client.query(WATERMARKS, parameters={"partitions": partitions}).result_rows
        watermarks = {int(p): int(ms) for p, ms in marks}
        found: dict[int, tuple[int, list[OpenSession]]] = {p: (watermarks.get(p, 0), []) for p in partitions}
        if not watermarks:
            return found
        since = min(watermarks.values()) - horizon_ms
        rows = client.query(OPEN_SESSIONS, parameters={"partitions": list(watermarks), "since": since}).result_rows
    except (ClickHouseError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc
    for partition, workspace, sid, visitors, start, end, received in rows:
        if int(partition) in found:
            found[int(partition)][1].append(
                (int(workspace), sorted(visitors), int(sid), int(start), int(end), int(received))
            )
    return found
