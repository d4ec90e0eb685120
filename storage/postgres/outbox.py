"""The transactional outbox: domain events written with the change that causes them, then
fanned out by the webhook dispatcher into one delivery row per matching endpoint.

Fan-out claims outbox rows with `FOR UPDATE SKIP LOCKED` and does all its work in that one
transaction: the row lock is the lease. A dispatcher that dies mid-fan-out loses its connection,
the transaction rolls back and the rows are claimable again, so no event is lost and no
delivery is made twice (deliveries are unique per endpoint and event besides).
"""

from datetime import datetime

import asyncpg
import orjson

from storage.postgres import domain_events
from storage.postgres.domain_events import ACCOUNT, CATALOGUE
from storage.postgres.pool import Connection

INSERT_EVENT = """
INSERT INTO outbox (event_type, workspace_id, account_id, payload, dedupe_key)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING event_id"""
CLAIM_EVENTS = """
SELECT id, event_id, event_type, workspace_id, account_id, payload, created_at
FROM outbox WHERE dispatched_at IS NULL ORDER BY id LIMIT $1
FOR UPDATE SKIP LOCKED"""
# Account-wide events reach every workspace of the account; the others only their own.
SELECT_AUDIENCE = """
SELECT e.id, e.workspace_id, w.account_id, e.events, e.created_at
FROM webhook_endpoints e JOIN workspaces w ON w.id = e.workspace_id
WHERE e.is_active AND (e.workspace_id = ANY($1::bigint[]) OR w.account_id = ANY($2::bigint[]))"""
INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, next_attempt_at)
SELECT d.endpoint_id, d.event_id, d.event_type, d.body, $5
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS d(endpoint_id, event_id, event_type, body)
ON CONFLICT (endpoint_id, event_id) DO NOTHING"""
MARK_DISPATCHED = "UPDATE outbox SET dispatched_at = now() WHERE id = ANY($1::bigint[])"
DELETE_DISPATCHED = "DELETE FROM outbox WHERE dispatched_at < now() - make_interval(days => $1)"


async def emit(
    conn: Connection,
    event_type: str,
    workspace_id: int,
    payload: dict,
    account_id: int | None = None,
    dedupe_key: str | None = None,
) -> str | None:
    """Write one event in the caller's transaction; returns its `evt_…` id (None: deduplicated)."""
    if event_type not in CATALOGUE:
        raise ValueError(f"unknown event type {event_type!r}")
    if CATALOGUE[event_type].audience == ACCOUNT and account_id is None:
        raise ValueError(f"{event_type} is account-wide: give the account_id")
    return await conn.fetchval(INSERT_EVENT, event_type, workspace_id, account_id, payload, dedupe_key)


def _audience(event: dict, endpoints: list[dict]) -> list[dict]:
    """Matching endpoints of the event's workspace (or account) that existed when it happened."""
    endpoints = [e for e in endpoints if e["created_at"] <= event["created_at"]]
    if event["account_id"] is not None:
        heard = [e for e in endpoints if e["account_id"] == event["account_id"]]
    else:
        heard = [e for e in endpoints if e["workspace_id"] == event["workspace_id"]]
    return [e for e in heard if domain_events.matches(e["events"], event["event_type"])]


def _body(event: dict) -> str:
    document = domain_events.envelope(
        event["event_id"], event["event_type"], event["workspace_id"], event["created_at"], event["payload"]
    )
    return orjson.dumps(document).decode()


async def fan_out(pool: asyncpg.Pool, now: datetime, limit: int) -> tuple[int, int]:
    """Turn up to `limit` outbox events into deliveries due at `now`; returns (events, deliveries)."""
    async with pool.acquire() as conn, conn.transaction():
        events = [dict(row) for row in await conn.fetch(CLAIM_EVENTS, limit)]
        if not events:
            return 0, 0
        workspace_ids = list({e["workspace_id"] for e in events if e["account_id"] is None})
        account_ids = list({e["account_id"] for e in events if e["account_id"] is not None})
        endpoints = [dict(row) for row in await conn.fetch(SELECT_AUDIENCE, workspace_ids, account_ids)]
        columns: tuple[list, list, list, list] = ([], [], [], [])
        for event in events:
            body = _body(event)
            for endpoint in _audience(event, endpoints):
                for column, value in zip(
                    columns, (endpoint["id"], event["event_id"], event["event_type"], body), strict=True
                ):
                    column.append(value)
        if columns[0]:
            await conn.execute(INSERT_DELIVERIES, *columns, now)
        await conn.execute(MARK_DISPATCHED, [e["id"] for e in events])
    return len(events), len(columns[0])


async def prune(pool: asyncpg.Pool, keep_days: int) -> None:
    """Forget events fanned out more than keep_days ago; their deliveries keep their bodies."""
    await pool.execute(DELETE_DISPATCHED, keep_days)


async def emit_seo_report_created(conn: Connection, report: dict) -> None:
    """seo_reports.create_report's on_created: the event commits with the report."""
    await emit(conn, "seo.report.created", report["workspace_id"], domain_events.seo_report_payload(report))


async def emit_limit_reached(
    pool: asyncpg.Pool,
    workspace_id: int,
    feature: str,
    used: int,
    limit: int,
    period: str,
    reset_at: datetime | None,
) -> str | None:
    """entitlement.limit_reached, at most once per workspace, feature and billing period."""
    payload = domain_events.limit_reached_payload(feature, used, limit, period, reset_at)
    async with pool.acquire() as conn:
        return await emit(
            conn,
            "entitlement.limit_reached",
            workspace_id,
            payload,
            dedupe_key=f"limit_reached:{workspace_id}:{feature}:{period}",
        )
