"""Workspaces and their accounts in Postgres."""

import asyncpg

from storage.errors import Conflict, NotFound
from storage.postgres import domain_events, outbox
from storage.postgres.listing import ListingSpec, ListQuery, fetch_page
from storage.postgres.pool import Connection, returned

# The plan tiers, lowest first (the order the CHECK constraints of migration 0001 allow).
TIERS = ("free", "starter", "pro", "agency", "enterprise")
COLUMNS = "id, account_id, name, slug, tier, settings, created_at, updated_at"

INSERT_ACCOUNT = "INSERT INTO accounts (name) VALUES ($1) RETURNING id, name, created_at"
SELECT_ACCOUNT = "SELECT id, name, created_at FROM accounts WHERE id = $1"
SELECT_ACCOUNTS = "SELECT id, name, created_at FROM accounts WHERE id = ANY($1::bigint[])"
INSERT_WORKSPACE = f"""
INSERT INTO workspaces (account_id, name, slug, tier, settings)
VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"""
SELECT_WORKSPACE = f"SELECT {COLUMNS} FROM workspaces WHERE id = $1"
SLUG_TAKEN = "SELECT slug FROM workspaces WHERE slug = $1 OR slug LIKE $1 || '-%'"
# The tier is not among the columns a client updates: only the operator sets it (SET_TIER).
UPDATE_WORKSPACE = f"""
UPDATE workspaces SET
    name = COALESCE($2, name),
    slug = COALESCE($3, slug),
    settings = jsonb_strip_nulls(settings || $4::jsonb),
    updated_at = now()
WHERE id = $1 RETURNING {COLUMNS}"""
SET_TIER = f"UPDATE workspaces SET tier = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
DELETE_WORKSPACE = f"DELETE FROM workspaces WHERE id = $1 RETURNING {COLUMNS}, now() AS deleted_at"

LISTING = ListingSpec(
    from_sql="workspaces",
    select_sql=COLUMNS,
    sort_columns={f: f for f in ("id", "name", "slug", "tier", "created_at", "updated_at")},
    fields=("id", "name", "slug", "tier", "settings", "account_id", "created_at", "updated_at"),
    filters={"tier": "tier", "slug": "slug"},
    search_columns=("name", "slug"),
    date_columns={"created": "created_at", "updated": "updated_at"},
    includes=("account",),
)


async def create_account(pool: asyncpg.Pool, name: str) -> dict:
    return returned(await pool.fetchrow(INSERT_ACCOUNT, name))


async def get_accounts(pool: asyncpg.Pool, ids: list[int]) -> dict[int, dict]:
    return {row["id"]: dict(row) for row in await pool.fetch(SELECT_ACCOUNTS, ids)}


async def _free_slug(conn: Connection | asyncpg.Pool, base: str) -> str:
    taken = {row["slug"] for row in await conn.fetch(SLUG_TAKEN, base)}
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


async def create_workspace(
    pool: asyncpg.Pool, account_id: int, name: str, slug: str | None, base_slug: str, tier: str, settings: dict
) -> dict:
    """Insert a workspace; with no slug given, the first free variant of base_slug is taken.

    A workspace.created event is written to the outbox in the same transaction."""
    for _ in range(5):  # a concurrent insert can take the free slug between check and insert
        chosen = slug or await _free_slug(pool, base_slug)
        try:
            async with pool.acquire() as conn, conn.transaction():
                row = returned(await conn.fetchrow(INSERT_WORKSPACE, account_id, name, chosen, tier, settings))
                await _emit(conn, "workspace.created", row, domain_events.workspace_payload(row))
                return row
        except asyncpg.UniqueViolationError as exc:
            if slug:
                raise Conflict("The slug has already been taken.", field="slug") from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"account {account_id}") from exc
    raise Conflict("Could not find a free slug; give one explicitly.", field="slug")


async def get_workspace(pool: asyncpg.Pool, workspace_id: int) -> dict:
    row = await pool.fetchrow(SELECT_WORKSPACE, workspace_id)
    if row is None:
        raise NotFound(f"workspace {workspace_id}")
    return dict(row)


async def list_workspaces(pool: asyncpg.Pool, account_id: int, query: ListQuery) -> tuple[list[dict], int]:
    return await fetch_page(pool, LISTING, query, "account_id = $1", [account_id])


async def update_workspace(
    pool: asyncpg.Pool, workspace_id: int, name: str | None, slug: str | None, settings: dict
) -> dict:
    try:
        return await _update(pool, UPDATE_WORKSPACE, workspace_id, name, slug, settings)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("The slug has already been taken.", field="slug") from exc


async def set_tier(pool: asyncpg.Pool, workspace_id: int, tier: str) -> dict:
    """The operator's change of plan; workspace.updated goes to the outbox with it."""
    return await _update(pool, SET_TIER, workspace_id, tier)


async def _update(pool: asyncpg.Pool, sql: str, workspace_id: int, *args) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchrow(sql, workspace_id, *args)
        if found is None:
            raise NotFound(f"workspace {workspace_id}")
        row = dict(found)
        await _emit(conn, "workspace.updated", row, domain_events.workspace_payload(row))
    return row


async def delete_workspace(pool: asyncpg.Pool, workspace_id: int) -> None:
    """Delete a workspace; its API keys go with it (ON DELETE CASCADE) and stop working at once.

    The account's other workspaces hear of it (workspace.deleted); its own endpoints are gone."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchrow(DELETE_WORKSPACE, workspace_id)
        if found is None:
            raise NotFound(f"workspace {workspace_id}")
        row = dict(found)
        await _emit(conn, "workspace.deleted", row, domain_events.workspace_deleted_payload(row, row["deleted_at"]))


async def _emit(conn: Connection, event_type: str, row: dict, payload: dict) -> None:
    await outbox.emit(conn, event_type, row["id"], payload, account_id=row["account_id"])
