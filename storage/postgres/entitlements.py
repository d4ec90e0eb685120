"""Entitlements in Postgres: a workspace's plan (tier and limit overrides) and its stock usage.

Stock usage (posts held, bytes stored) is written through here on every change, because the
Redis counters of stock features are rebuilt from it. Connection failures leave as
`Unavailable`, so the caller can take back its Redis reservation and answer 503.
"""

import asyncio
from dataclasses import dataclass

import asyncpg

from storage.errors import NotFound, Unavailable

SELECT_PLAN = """
SELECT w.tier,
       coalesce(array_agg(o.feature) FILTER (WHERE o.feature IS NOT NULL), '{}') AS features,
       coalesce(array_agg(o.limit_value) FILTER (WHERE o.feature IS NOT NULL), '{}') AS limits
FROM workspaces w LEFT JOIN entitlement_overrides o ON o.workspace_id = w.id
WHERE w.id = $1
GROUP BY w.tier"""
UPSERT_OVERRIDE = """
INSERT INTO entitlement_overrides (workspace_id, feature, limit_value) VALUES ($1, $2, $3)
ON CONFLICT (workspace_id, feature) DO UPDATE SET limit_value = $3, updated_at = now()"""
DELETE_OVERRIDE = "DELETE FROM entitlement_overrides WHERE workspace_id = $1 AND feature = $2"
# GREATEST: a release never takes the stored level below zero, as in Redis.
ADD_USAGE = """
INSERT INTO entitlement_usage (workspace_id, feature, used) VALUES ($1, $2, GREATEST($3::bigint, 0))
ON CONFLICT (workspace_id, feature)
DO UPDATE SET used = GREATEST(entitlement_usage.used + $3::bigint, 0), updated_at = now()
RETURNING used"""
SELECT_USAGE = "SELECT feature, used FROM entitlement_usage WHERE workspace_id = $1 AND feature = ANY($2::text[])"
# Every workspace (or one), each with its stored levels: a workspace without any is listed too.
SELECT_ALL_USAGE = """
SELECT w.id, u.feature, u.used
FROM workspaces w LEFT JOIN entitlement_usage u ON u.workspace_id = w.id
WHERE $1::bigint IS NULL OR w.id = $1
ORDER BY w.id"""
# What a lost connection, a restarting server or a timed-out statement raise.
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


@dataclass(frozen=True, slots=True)
class Plan:
    tier: str
    overrides: dict[str, int]  # feature → limit, replacing the tier's


async def _call(pending):
    try:
        return await pending
    except UNAVAILABLE as exc:
        raise Unavailable("Postgres", str(exc)) from exc


async def get_plan(pool: asyncpg.Pool, workspace_id: int) -> Plan:
    row = await _call(pool.fetchrow(SELECT_PLAN, workspace_id))
    if row is None:
        raise NotFound(f"workspace {workspace_id}")
    return Plan(row["tier"], dict(zip(row["features"], row["limits"], strict=True)))


async def set_override(pool: asyncpg.Pool, workspace_id: int, feature: str, limit: int) -> None:
    try:
        await pool.execute(UPSERT_OVERRIDE, workspace_id, feature, limit)
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound(f"workspace {workspace_id}") from exc


async def delete_override(pool: asyncpg.Pool, workspace_id: int, feature: str) -> bool:
    """Back to the tier's limit; False when there was no override."""
    return await pool.execute(DELETE_OVERRIDE, workspace_id, feature) != "DELETE 0"


async def add_usage(pool: asyncpg.Pool, workspace_id: int, feature: str, delta: int) -> int:
    """Change a stock level by `delta` (negative releases); returns the stored level."""
    return await _call(pool.fetchval(ADD_USAGE, workspace_id, feature, delta))


async def stock_usage(pool: asyncpg.Pool, workspace_id: int, features: list[str]) -> dict[str, int]:
    """Stored levels of the given features; one never used is 0."""
    rows = await _call(pool.fetch(SELECT_USAGE, workspace_id, features))
    found = {row["feature"]: row["used"] for row in rows}
    return {feature: found.get(feature, 0) for feature in features}


async def stock_levels(pool: asyncpg.Pool, workspace_id: int | None = None) -> dict[int, dict[str, int]]:
    """Workspace id → stored level of each stock feature it ever used; every workspace, or the one."""
    rows = await _call(pool.fetch(SELECT_ALL_USAGE, workspace_id))
    if not rows and workspace_id is not None:
        raise NotFound(f"workspace {workspace_id}")
    levels: dict[int, dict[str, int]] = {}
    for row in rows:
        found = levels.setdefault(row["id"], {})
        if row["feature"] is not None:
            found[row["feature"]] = row["used"]
    return levels
