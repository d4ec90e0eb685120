"""Pixel domains in Postgres: which workspace a site's host belongs to, and its pixel config."""

import asyncpg

from storage.errors import Conflict, NotFound
from storage.postgres.listing import ListingSpec, ListQuery, fetch_page

COLUMNS = "id, workspace_id, host, enabled, pageviews, events, sessions, sample_rate, created_at, updated_at"
CONFIG_FIELDS = ("enabled", "pageviews", "events", "sessions", "sample_rate")

INSERT_DOMAIN = f"""
INSERT INTO pixel_domains (workspace_id, host, enabled, pageviews, events, sessions, sample_rate)
VALUES ($1, $2, COALESCE($3, true), COALESCE($4, true), COALESCE($5, true), COALESCE($6, true),
        COALESCE($7, 1.0))
RETURNING {COLUMNS}"""
SELECT_DOMAIN = f"SELECT {COLUMNS} FROM pixel_domains WHERE id = $1 AND workspace_id = $2"
SELECT_BY_HOST = f"SELECT {COLUMNS} FROM pixel_domains WHERE host = $1"
SELECT_OWNER = "SELECT workspace_id FROM pixel_domains WHERE host = $1"
UPDATE_DOMAIN = f"""
UPDATE pixel_domains SET
    enabled = COALESCE($3, enabled),
    pageviews = COALESCE($4, pageviews),
    events = COALESCE($5, events),
    sessions = COALESCE($6, sessions),
    sample_rate = COALESCE($7, sample_rate),
    updated_at = now()
WHERE id = $1 AND workspace_id = $2 RETURNING {COLUMNS}"""
DELETE_DOMAIN = f"DELETE FROM pixel_domains WHERE id = $1 AND workspace_id = $2 RETURNING {COLUMNS}"

LISTING = ListingSpec(
    from_sql="pixel_domains",
    select_sql=COLUMNS,
    sort_columns={f: f for f in ("id", "host", "created_at", "updated_at")},
    fields=("id", "workspace_id", "host", "enabled", "features", "sample_rate", "created_at", "updated_at"),
    filters={"host": "host"},
    search_columns=("host",),
    date_columns={"created": "created_at", "updated": "updated_at"},
)


def _config_args(config: dict) -> list:
    return [config.get(name) for name in CONFIG_FIELDS]


async def create_domain(pool: asyncpg.Pool, workspace_id: int, host: str, config: dict) -> dict:
    """Register a host; Conflict when any workspace (this one included) has it already."""
    try:
        return dict(await pool.fetchrow(INSERT_DOMAIN, workspace_id, host, *_config_args(config)))
    except asyncpg.UniqueViolationError:
        owner = await pool.fetchval(SELECT_OWNER, host)
        if owner == workspace_id:
            raise Conflict(f"The host {host} is already registered in this workspace.")
        raise Conflict(f"The host {host} is registered by another workspace.")
    except asyncpg.ForeignKeyViolationError:
        raise NotFound(f"workspace {workspace_id}")


async def get_domain(pool: asyncpg.Pool, workspace_id: int, domain_id: int) -> dict:
    row = await pool.fetchrow(SELECT_DOMAIN, domain_id, workspace_id)
    if row is None:
        raise NotFound(f"pixel domain {domain_id}")
    return dict(row)


async def find_by_host(pool: asyncpg.Pool, host: str) -> dict | None:
    row = await pool.fetchrow(SELECT_BY_HOST, host)
    return None if row is None else dict(row)


async def list_domains(pool: asyncpg.Pool, workspace_id: int, query: ListQuery) -> tuple[list[dict], int]:
    return await fetch_page(pool, LISTING, query, "workspace_id = $1", [workspace_id])


async def update_domain(pool: asyncpg.Pool, workspace_id: int, domain_id: int, config: dict) -> dict:
    """Change the given config fields (None leaves one as it is)."""
    row = await pool.fetchrow(UPDATE_DOMAIN, domain_id, workspace_id, *_config_args(config))
    if row is None:
        raise NotFound(f"pixel domain {domain_id}")
    return dict(row)


async def delete_domain(pool: asyncpg.Pool, workspace_id: int, domain_id: int) -> dict:
    """Remove a host; returns the deleted row (its host is then free for any workspace)."""
    row = await pool.fetchrow(DELETE_DOMAIN, domain_id, workspace_id)
    if row is None:
        raise NotFound(f"pixel domain {domain_id}")
    return dict(row)
