"""Webhook endpoints, their deliveries and attempts in Postgres.

Deliveries are claimed with a time lease (`lease_until`, `lease_token`) rather than a row lock:
a send can take the whole 30 s timeout and no transaction should stay open that long. A worker
that dies after claiming leaves the lease to run out; the next claim takes the delivery again.
Every time given here comes from the dispatcher's clock, so tests can move it.
"""

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import asyncpg

from storage.errors import Conflict, NotFound
from storage.postgres import outbox
from storage.postgres.domain_events import webhook_disabled_payload
from storage.postgres.listing import ListingSpec, ListQuery, fetch_page
from storage.postgres.pool import Connection, returned


class DeliveryStatus(enum.StrEnum):
    """A delivery's state: webhook_deliveries.status, as stored and as the API shows it."""

    PENDING = "pending"  # not attempted yet, or queued again by hand
    SUCCESS = "success"  # a 2xx answered
    FAILED = "failed"  # no more attempts: retries ran out, 410, or the endpoint was disabled
    RETRYING = "retrying"  # an attempt failed; the next is due at next_attempt_at


class DisableReason(enum.StrEnum):
    """Why the dispatcher disabled an endpoint: webhook_endpoints.disabled_reason, and the
    webhook.disabled event's `reason`."""

    GONE = "gone"  # it answered 410
    CONSECUTIVE_FAILURES = "consecutive_failures"  # failing past both thresholds (count and time)


COLUMNS = (
    "id, workspace_id, url, events, is_active, disabled_reason, success_count, failure_count, "
    "consecutive_failures, failing_since, last_delivery_at, previous_secret_expires_at, created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, endpoint_id, event_id, event_type, status, attempt, response_code, response_body, error, "
    "next_attempt_at, delivered_at, created_at, updated_at"
)
INSERT_ENDPOINT = f"""
INSERT INTO webhook_endpoints (workspace_id, url, events, secret) VALUES ($1, $2, $3, $4)
RETURNING {COLUMNS}, secret"""
SELECT_ENDPOINT = f"SELECT {COLUMNS} FROM webhook_endpoints WHERE workspace_id = $1 AND id = $2"
SELECT_SIGNING = f"SELECT {COLUMNS}, secret, previous_secret FROM webhook_endpoints WHERE workspace_id = $1 AND id = $2"
# Enabling again starts the failure count afresh: the threshold should measure the new run only.
UPDATE_ENDPOINT = f"""
UPDATE webhook_endpoints SET
    url = COALESCE($3, url),
    events = COALESCE($4, events),
    is_active = COALESCE($5, is_active),
    disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END,
    consecutive_failures = CASE WHEN $5 AND NOT is_active THEN 0 ELSE consecutive_failures END,
    failing_since = CASE WHEN $5 AND NOT is_active THEN NULL ELSE failing_since END,
    updated_at = now()
WHERE workspace_id = $1 AND id = $2 RETURNING {COLUMNS}"""
DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE workspace_id = $1 AND id = $2"
ROTATE_SECRET = f"""
UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
    previous_secret_expires_at = now() + make_interval(hours => $4), updated_at = now()
WHERE workspace_id = $1 AND id = $2 RETURNING {COLUMNS}, secret"""

SELECT_DELIVERY = f"""
SELECT d.{DELIVERY_COLUMNS.replace(", ", ", d.")}
FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE e.workspace_id = $1 AND d.endpoint_id = $2 AND d.id = $3"""
REQUEUE_DELIVERY = f"""
UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
WHERE id = $1 RETURNING {DELIVERY_COLUMNS}"""
INSERT_TEST_DELIVERY = f"""
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, status, attempt, response_code,
    response_body, error, delivered_at)
VALUES ($1, $2, 'webhook.test', $3, $4, 1, $5, $6, $7, CASE WHEN $4 = 'success' THEN now() END)
RETURNING {DELIVERY_COLUMNS}"""

# Candidates first (due, endpoint active and not at its in-flight bound in this worker), locked
# only for the length of the claim; the caller keeps a few per endpoint and leases those.
SELECT_DUE = """
SELECT d.id, d.endpoint_id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.status IN ('pending', 'retrying') AND d.next_attempt_at <= $1
  AND (d.lease_until IS NULL OR d.lease_until < $1)
  AND e.is_active AND d.endpoint_id <> ALL($2::bigint[])
ORDER BY d.next_attempt_at LIMIT $3
FOR UPDATE OF d SKIP LOCKED"""
LEASE = """
UPDATE webhook_deliveries d SET lease_token = $2, lease_until = $3
FROM webhook_endpoints e
WHERE d.id = ANY($1::bigint[]) AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.event_id, d.event_type, d.body, d.attempt, d.created_at, e.url, e.secret,
    CASE WHEN e.previous_secret_expires_at > $4 THEN e.previous_secret END AS previous_secret"""

# Outcomes of one endpoint take its row first, so the disable path (which touches the endpoint's
# other deliveries) cannot deadlock with a concurrent outcome holding one of them.
LOCK_ENDPOINT = "SELECT is_active FROM webhook_endpoints WHERE id = $1 FOR UPDATE"
INSERT_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, response_body, duration_ms, started_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""
# Only the lease holder records the outcome; a worker whose lease ran out lost the delivery.
FINISH_DELIVERY = """
UPDATE webhook_deliveries SET status = $3::text, attempt = attempt + 1, response_code = $4, response_body = $5,
    error = $6, next_attempt_at = $7, delivered_at = CASE WHEN $3 = 'success' THEN $8::timestamptz END,
    lease_token = NULL, lease_until = NULL, updated_at = now()
WHERE id = $1 AND lease_token = $2 RETURNING attempt"""
ENDPOINT_SUCCEEDED = f"""
UPDATE webhook_endpoints SET success_count = success_count + 1, consecutive_failures = 0,
    failing_since = NULL, last_delivery_at = $2
WHERE id = $1 RETURNING {COLUMNS}"""
ENDPOINT_FAILED = f"""
UPDATE webhook_endpoints SET failure_count = failure_count + 1, consecutive_failures = consecutive_failures + 1,
    failing_since = COALESCE(failing_since, $2), last_delivery_at = $2
WHERE id = $1 RETURNING {COLUMNS}"""
DISABLE_ENDPOINT = f"""
UPDATE webhook_endpoints SET is_active = false, disabled_reason = $2, updated_at = now()
WHERE id = $1 AND is_active RETURNING {COLUMNS}"""
# The spec's invariant: attempts stop when the endpoint is disabled.
FAIL_OPEN_DELIVERIES = """
UPDATE webhook_deliveries SET status = 'failed', error = COALESCE(error || '; ', '') || $2,
    next_attempt_at = NULL, updated_at = now()
WHERE endpoint_id = $1 AND status IN ('pending', 'retrying')"""

# What the dispatcher still owes: due now or waiting for a retry (the due index covers both).
BACKLOG = """
SELECT count(*) AS deliveries, min(next_attempt_at) FILTER (WHERE next_attempt_at <= $1) AS oldest_due
FROM webhook_deliveries WHERE status IN ('pending', 'retrying')"""

LISTING = ListingSpec(
    from_sql="webhook_endpoints",
    select_sql=COLUMNS,
    sort_columns={f: f for f in ("id", "url", "created_at", "updated_at", "last_delivery_at")},
    fields=(
        "id",
        "url",
        "events",
        "is_active",
        "success_count",
        "failure_count",
        "consecutive_failures",
        "last_delivery_at",
        "created_at",
        "updated_at",
    ),
    statuses={"active": "is_active", "disabled": "NOT is_active"},
    search_columns=("url",),
    date_columns={"created": "created_at", "updated": "updated_at"},
)
DELIVERY_LISTING = ListingSpec(
    from_sql="webhook_deliveries",
    select_sql=DELIVERY_COLUMNS,
    sort_columns={f: f for f in ("id", "created_at", "updated_at", "attempt", "next_attempt_at")},
    fields=(
        "id",
        "event_id",
        "event_type",
        "status",
        "response_code",
        "attempt",
        "delivered_at",
        "next_retry_at",
        "error",
        "created_at",
    ),
    filters={"event_type": "event_type", "event_id": "event_id"},
    statuses={s.value: f"status = '{s.value}'" for s in DeliveryStatus},
    date_columns={"created": "created_at", "updated": "updated_at"},
    default_sort=(("id", True),),
)


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one worker, with what sending it needs."""

    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    body: str
    attempt: int  # attempts made before this one
    created_at: datetime
    url: str
    secrets: tuple[str, ...]  # current first; the previous one while its grace lasts
    lease_token: uuid.UUID


@dataclass(frozen=True)
class Outcome:
    """One attempt's result, and what the dispatcher decided follows it."""

    status: DeliveryStatus  # SUCCESS, RETRYING or FAILED
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int
    started_at: datetime
    next_attempt_at: datetime | None
    disable_reason: DisableReason | None = None  # set when this outcome disables the endpoint at once (410)


@dataclass(frozen=True)
class Backlog:
    deliveries: int  # not delivered yet and not given up
    oldest_due: datetime | None  # the earliest next_attempt_at among those due; None when none is


async def backlog(pool: asyncpg.Pool, now: datetime) -> Backlog:
    row = returned(await pool.fetchrow(BACKLOG, now))
    return Backlog(row["deliveries"], row["oldest_due"])


async def create_endpoint(pool: asyncpg.Pool, workspace_id: int, url: str, events: list[str], secret: str) -> dict:
    return returned(await pool.fetchrow(INSERT_ENDPOINT, workspace_id, url, events, secret))


async def get_endpoint(pool: asyncpg.Pool, workspace_id: int, endpoint_id: int) -> dict:
    row = await pool.fetchrow(SELECT_ENDPOINT, workspace_id, endpoint_id)
    if row is None:
        raise NotFound(f"webhook {endpoint_id}")
    return dict(row)


async def signing_endpoint(pool: asyncpg.Pool, workspace_id: int, endpoint_id: int) -> dict:
    """The endpoint with its secrets, for sending to it."""
    row = await pool.fetchrow(SELECT_SIGNING, workspace_id, endpoint_id)
    if row is None:
        raise NotFound(f"webhook {endpoint_id}")
    return dict(row)


async def list_endpoints(pool: asyncpg.Pool, workspace_id: int, query: ListQuery) -> tuple[list[dict], int]:
    return await fetch_page(pool, LISTING, query, "workspace_id = $1", [workspace_id])


async def update_endpoint(
    pool: asyncpg.Pool,
    workspace_id: int,
    endpoint_id: int,
    url: str | None,
    events: list[str] | None,
    is_active: bool | None,
) -> dict:
    row = await pool.fetchrow(UPDATE_ENDPOINT, workspace_id, endpoint_id, url, events, is_active)
    if row is None:
        raise NotFound(f"webhook {endpoint_id}")
    return dict(row)


async def delete_endpoint(pool: asyncpg.Pool, workspace_id: int, endpoint_id: int) -> None:
    """Delete an endpoint; its deliveries go with it, so pending ones are never sent."""
    if await pool.execute(DELETE_ENDPOINT, workspace_id, endpoint_id) == "DELETE 0":
        raise NotFound(f"webhook {endpoint_id}")


async def rotate_secret(pool: asyncpg.Pool, workspace_id: int, endpoint_id: int, secret: str, grace_hours: int) -> dict:
    """New secret now; the replaced one keeps signing for grace_hours (an older one stops at once)."""
    row = await pool.fetchrow(ROTATE_SECRET, workspace_id, endpoint_id, secret, grace_hours)
    if row is None:
        raise NotFound(f"webhook {endpoint_id}")
    return dict(row)


async def list_deliveries(
    pool: asyncpg.Pool, workspace_id: int, endpoint_id: int, query: ListQuery
) -> tuple[list[dict], int]:
    await get_endpoint(pool, workspace_id, endpoint_id)
    return await fetch_page(pool, DELIVERY_LISTING, query, "endpoint_id = $1", [endpoint_id])


async def get_delivery(pool: asyncpg.Pool, workspace_id: int, endpoint_id: int, delivery_id: int) -> dict:
    row = await pool.fetchrow(SELECT_DELIVERY, workspace_id, endpoint_id, delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id}")
    return dict(row)


async def requeue_delivery(pool: asyncpg.Pool, workspace_id: int, endpoint_id: int, delivery_id: int) -> dict:
    """Queue one more attempt now. Conflict when it succeeded already or its endpoint is disabled."""
    async with pool.acquire() as conn, conn.transaction():
        endpoint = await conn.fetchrow(SELECT_ENDPOINT + " FOR SHARE", workspace_id, endpoint_id)
        row = await conn.fetchrow(SELECT_DELIVERY + " FOR UPDATE OF d", workspace_id, endpoint_id, delivery_id)
        if endpoint is None or row is None:
            raise NotFound(f"delivery {delivery_id}")
        if row["status"] == DeliveryStatus.SUCCESS:
            raise Conflict("This delivery already succeeded.")
        if not endpoint["is_active"]:
            raise Conflict("The webhook endpoint is disabled; enable it (PATCH is_active) first.")
        return returned(await conn.fetchrow(REQUEUE_DELIVERY, delivery_id))


async def record_test_delivery(
    pool: asyncpg.Pool, endpoint_id: int, event_id: str, body: str, outcome: Outcome
) -> dict:
    row = returned(
        await pool.fetchrow(
            INSERT_TEST_DELIVERY,
            endpoint_id,
            event_id,
            body,
            outcome.status,
            outcome.status_code,
            outcome.response_body,
            outcome.error,
        )
    )
    await pool.execute(
        INSERT_ATTEMPT,
        row["id"],
        1,
        outcome.status_code,
        outcome.error,
        outcome.response_body,
        outcome.duration_ms,
        outcome.started_at,
    )
    return row


async def claim_due(
    pool: asyncpg.Pool, now: datetime, lease: timedelta, limit: int, per_endpoint: int, in_flight: dict[int, int]
) -> list[Claimed]:
    """Lease up to `limit` due deliveries, keeping each endpoint's in-flight count ≤ per_endpoint."""
    token = uuid.uuid4()
    taken = dict(in_flight)
    busy = [endpoint for endpoint, n in taken.items() if n >= per_endpoint]
    async with pool.acquire() as conn, conn.transaction():
        candidates = await conn.fetch(SELECT_DUE, now, busy, limit * 4)
        chosen: list[int] = []
        for row in candidates:
            if taken.get(row["endpoint_id"], 0) < per_endpoint and len(chosen) < limit:
                taken[row["endpoint_id"]] = taken.get(row["endpoint_id"], 0) + 1
                chosen.append(row["id"])
        if not chosen:
            return []
        rows = await conn.fetch(LEASE, chosen, token, now + lease, now)
    return [_claimed(row, token) for row in rows]


def _claimed(row, token: uuid.UUID) -> Claimed:
    secrets = (row["secret"],) + ((row["previous_secret"],) if row["previous_secret"] else ())
    return Claimed(
        row["id"],
        row["endpoint_id"],
        row["event_id"],
        row["event_type"],
        row["body"],
        row["attempt"],
        row["created_at"],
        row["url"],
        secrets,
        token,
    )


async def record_outcome(
    pool: asyncpg.Pool, claimed: Claimed, outcome: Outcome, disable_after: int, disable_after_time: timedelta
) -> DisableReason | None:
    """Store the attempt, the delivery's new state and the endpoint's health, in one transaction.

    Returns the reason when the endpoint got disabled (410, or failing continuously past both
    `disable_after` attempts and `disable_after_time`); a webhook.disabled event says so."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(LOCK_ENDPOINT, claimed.endpoint_id) and outcome.status == DeliveryStatus.RETRYING:
            # Disabled while this attempt was in flight: no more attempts.
            outcome = replace(
                outcome, status=DeliveryStatus.FAILED, next_attempt_at=None, error=f"{outcome.error}; endpoint disabled"
            )
        await conn.execute(
            INSERT_ATTEMPT,
            claimed.id,
            claimed.attempt + 1,
            outcome.status_code,
            outcome.error,
            outcome.response_body,
            outcome.duration_ms,
            outcome.started_at,
        )
        finished = await conn.fetchval(
            FINISH_DELIVERY,
            claimed.id,
            claimed.lease_token,
            outcome.status,
            outcome.status_code,
            outcome.response_body,
            outcome.error,
            outcome.next_attempt_at,
            outcome.started_at,
        )
        if finished is None:
            return None  # the lease ran out and another worker owns the delivery now
        succeeded = outcome.status == DeliveryStatus.SUCCESS
        endpoint = returned(
            await conn.fetchrow(
                ENDPOINT_SUCCEEDED if succeeded else ENDPOINT_FAILED, claimed.endpoint_id, outcome.started_at
            )
        )
        reason = outcome.disable_reason
        if (
            reason is None
            and not succeeded
            and endpoint["consecutive_failures"] >= disable_after
            and outcome.started_at - endpoint["failing_since"] >= disable_after_time
        ):
            reason = DisableReason.CONSECUTIVE_FAILURES
        if reason is not None and not await _disable(conn, endpoint, reason, outcome.started_at):
            reason = None
    return reason


async def _disable(conn: Connection, endpoint: dict, reason: DisableReason, now: datetime) -> bool:
    if await conn.fetchrow(DISABLE_ENDPOINT, endpoint["id"], reason) is None:
        return False  # disabled already (by a user, or by another worker's outcome)
    await conn.execute(FAIL_OPEN_DELIVERIES, endpoint["id"], f"endpoint disabled: {reason}")
    await outbox.emit(
        conn, "webhook.disabled", endpoint["workspace_id"], webhook_disabled_payload(endpoint, reason, now)
    )
    return True
