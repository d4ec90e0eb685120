"""API keys in Postgres: stored as SHA-256 hashes with a display prefix, never in clear."""

from datetime import datetime

import asyncpg

from storage.errors import Conflict, NotFound
from storage.postgres import domain_events, outbox
from storage.postgres.listing import ListingSpec, ListQuery, fetch_page
from storage.postgres.pool import Connection, returned
from storage.postgres.workspaces import TIERS

COLUMNS = (
    "id, workspace_id, name, prefix, scopes, rate_limit_tier, last_used_at, expires_at, "
    "revoked_at, rotated_to_id, created_at, updated_at"
)
SELECT_KEY = f"SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1 AND id = $2"
SELECT_KEY_FOR_UPDATE = SELECT_KEY + " FOR UPDATE"
# The one query on the authenticated path: the key, its workspace's account and tier.
SELECT_BY_HASH = """
SELECT k.id, k.workspace_id, k.key_hash, k.scopes, k.rate_limit_tier, k.expires_at,
       k.revoked_at, w.account_id, w.tier AS workspace_tier
FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
WHERE k.key_hash = $1"""
MARK_ROTATED = """
UPDATE api_keys SET revoked_at = now() + make_interval(hours => $2), rotated_to_id = $3,
    updated_at = now()
WHERE id = $1 RETURNING revoked_at, key_hash"""
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = now(), updated_at = now()
WHERE workspace_id = $1 AND id = $2 AND (revoked_at IS NULL OR revoked_at > now())
RETURNING {COLUMNS}, key_hash"""
SELECT_WORKSPACE_HASHES = "SELECT key_hash FROM api_keys WHERE workspace_id = $1"
KEY_EXISTS = "SELECT 1 FROM api_keys WHERE workspace_id = $1 AND id = $2"
TOUCH_LAST_USED = """
UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, u.used_at)
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, used_at)
WHERE k.id = u.id"""

# The tier a key is limited by, as app/access/tiers.py `capped` computes it: its own within its
# workspace's, the workspace's when it has none. What `?rate_limit_tier=` filters on and the API shows.
_ORDER = "ARRAY[" + ", ".join(f"'{tier}'" for tier in TIERS) + "]"
EFFECTIVE_TIER = f"""(SELECT CASE WHEN api_keys.rate_limit_tier IS NULL
        OR array_position({_ORDER}, api_keys.rate_limit_tier) > array_position({_ORDER}, w.tier)
    THEN w.tier ELSE api_keys.rate_limit_tier END
    FROM workspaces w WHERE w.id = api_keys.workspace_id)"""
# A new key's row as the API and its api_key.created / rotated events show it: the tier that limits it.
INSERT_KEY = f"""
INSERT INTO api_keys (workspace_id, name, prefix, key_hash, scopes, rate_limit_tier, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {COLUMNS.replace("rate_limit_tier", EFFECTIVE_TIER + " AS rate_limit_tier")}"""
LIVE = "(revoked_at IS NULL OR revoked_at > now()) AND (expires_at IS NULL OR expires_at > now())"
LISTING = ListingSpec(
    from_sql="api_keys",
    select_sql=COLUMNS,
    sort_columns={f: f for f in ("id", "name", "created_at", "updated_at", "last_used_at", "expires_at")},
    fields=(
        "id",
        "workspace_id",
        "name",
        "prefix",
        "scopes",
        "rate_limit_tier",
        "status",
        "last_used_at",
        "expires_at",
        "grace_period_ends_at",
        "created_at",
        "updated_at",
    ),
    filters={"rate_limit_tier": EFFECTIVE_TIER},
    statuses={
        "active": f"{LIVE} AND revoked_at IS NULL",
        "rotating": f"{LIVE} AND revoked_at IS NOT NULL",
        "expired": "expires_at <= now() AND (revoked_at IS NULL OR revoked_at > now())",
        "revoked": "revoked_at <= now()",
    },
    search_columns=("name", "prefix"),
    date_columns={"created": "created_at", "updated": "updated_at"},
    includes=("workspace",),
)


async def create_key(
    pool: asyncpg.Pool,
    workspace_id: int,
    name: str,
    prefix: str,
    key_hash: bytes,
    scopes: list[str],
    rate_limit_tier: str | None,
    expires_at: datetime | None,
) -> dict:
    """Insert a key; an api_key.created event goes to the outbox in the same transaction."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _insert_key(conn, workspace_id, name, prefix, key_hash, scopes, rate_limit_tier, expires_at)
        await outbox.emit(conn, "api_key.created", workspace_id, domain_events.api_key_payload(row))
    return row


async def _insert_key(
    conn: Connection,
    workspace_id: int,
    name: str,
    prefix: str,
    key_hash: bytes,
    scopes: list[str],
    rate_limit_tier: str | None,
    expires_at: datetime | None,
) -> dict:
    try:
        row = await conn.fetchrow(INSERT_KEY, workspace_id, name, prefix, key_hash, scopes, rate_limit_tier, expires_at)
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound(f"workspace {workspace_id}") from exc
    return returned(row)


async def find_by_hash(pool: asyncpg.Pool, key_hash: bytes) -> dict | None:
    row = await pool.fetchrow(SELECT_BY_HASH, key_hash)
    return dict(row) if row is not None else None


async def get_key(pool: asyncpg.Pool, workspace_id: int, key_id: int) -> dict:
    row = await pool.fetchrow(SELECT_KEY, workspace_id, key_id)
    if row is None:
        raise NotFound(f"api key {key_id}")
    return dict(row)


async def list_keys(pool: asyncpg.Pool, workspace_id: int, query: ListQuery) -> tuple[list[dict], int]:
    return await fetch_page(pool, LISTING, query, "workspace_id = $1", [workspace_id])


async def rotate_key(
    pool: asyncpg.Pool,
    workspace_id: int,
    key_id: int,
    prefix: str,
    key_hash: bytes,
    grace_hours: int,
    rate_limit_tier: str | None,
) -> tuple[dict, datetime, bytes]:
    """Issue a successor with the same name, scopes and expiry, and the given tier; the old key
    lives grace_hours more.

    Returns the new key's row, the end of the grace period and the old key's hash."""
    async with pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow(SELECT_KEY_FOR_UPDATE, workspace_id, key_id)
        if old is None:
            raise NotFound(f"api key {key_id}")
        if old["rotated_to_id"] is not None or old["revoked_at"] is not None:
            raise Conflict("This key was already rotated or revoked; rotate its successor instead.")
        new = await _insert_key(
            conn,
            workspace_id,
            old["name"],
            prefix,
            key_hash,
            old["scopes"],
            rate_limit_tier,
            old["expires_at"],
        )
        marked = returned(await conn.fetchrow(MARK_ROTATED, key_id, grace_hours, new["id"]))
        await outbox.emit(
            conn,
            "api_key.rotated",
            workspace_id,
            domain_events.api_key_rotated_payload(key_id, new, marked["revoked_at"]),
        )
    return new, marked["revoked_at"], bytes(marked["key_hash"])


async def revoke_key(pool: asyncpg.Pool, workspace_id: int, key_id: int) -> bytes | None:
    """Revoke at once (also cutting a rotation grace period short); revoking twice is fine.

    Returns the key's hash when this call revoked it."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(REVOKE_KEY, workspace_id, key_id)
        if row is not None:
            await outbox.emit(conn, "api_key.revoked", workspace_id, domain_events.api_key_revoked_payload(dict(row)))
    if row is None and await pool.fetchval(KEY_EXISTS, workspace_id, key_id) is None:
        raise NotFound(f"api key {key_id}")
    return None if row is None else bytes(row["key_hash"])


async def workspace_key_hashes(pool: asyncpg.Pool, workspace_id: int) -> list[bytes]:
    return [bytes(row["key_hash"]) for row in await pool.fetch(SELECT_WORKSPACE_HASHES, workspace_id)]


async def touch_last_used(pool: asyncpg.Pool, used: dict[int, datetime]) -> None:
    if used:
        await pool.execute(TOUCH_LAST_USED, list(used.keys()), list(used.values()))
