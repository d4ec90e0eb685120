"""Pixel domains in Postgres: workspaces' claims on a site's host, their pixel config and privacy
and session settings (migration 0009), and which claim is verified (at most one per host; 0008)."""

import asyncpg
from publicsuffixlist import PublicSuffixList

from storage.errors import Conflict, NotFound
from storage.postgres import domain_events, outbox
from storage.postgres.listing import ListingSpec, ListQuery, fetch_page
from storage.postgres.pool import returned

COLUMNS = (
    "id, workspace_id, host, enabled, pageviews, events, sessions, sample_rate, session_timeout_minutes, "
    "honor_privacy_signals, excluded_paths, visitor_id_rotation, verification_token, verified_at, "
    "verification_method, verification_lost_at, created_at, updated_at"
)
CONFIG_FIELDS = (
    "enabled",
    "pageviews",
    "events",
    "sessions",
    "sample_rate",
    "session_timeout_minutes",
    "honor_privacy_signals",
    "excluded_paths",
    "visitor_id_rotation",
)
# The Public Suffix List as the package ships it (ICANN and private sections: com, co.uk,
# github.io): names under which different parties register, so nobody may claim one.
SUFFIXES = PublicSuffixList()
# Verifications of one host are serialised on this advisory lock (with the host's hash), so
# two workspaces verifying at once cannot both end up verified.
VERIFY_LOCK_CLASS = 8

INSERT_DOMAIN = f"""
INSERT INTO pixel_domains (workspace_id, host, enabled, pageviews, events, sessions, sample_rate,
    session_timeout_minutes, honor_privacy_signals, excluded_paths, visitor_id_rotation)
VALUES ($1, $2, COALESCE($3, true), COALESCE($4, true), COALESCE($5, true), COALESCE($6, true),
        COALESCE($7, 1.0), COALESCE($8, 30), COALESCE($9, true), COALESCE($10::text[], '{{}}'),
        COALESCE($11, 'daily'))
RETURNING {COLUMNS}"""
SELECT_DOMAIN = f"SELECT {COLUMNS} FROM pixel_domains WHERE id = $1 AND workspace_id = $2"
SELECT_CLAIMS = f"SELECT {COLUMNS} FROM pixel_domains WHERE host = ANY($1::text[])"
UPDATE_DOMAIN = f"""
UPDATE pixel_domains SET
    enabled = COALESCE($3, enabled),
    pageviews = COALESCE($4, pageviews),
    events = COALESCE($5, events),
    sessions = COALESCE($6, sessions),
    sample_rate = COALESCE($7, sample_rate),
    session_timeout_minutes = COALESCE($8, session_timeout_minutes),
    honor_privacy_signals = COALESCE($9, honor_privacy_signals),
    excluded_paths = COALESCE($10::text[], excluded_paths),
    visitor_id_rotation = COALESCE($11, visitor_id_rotation),
    updated_at = now()
WHERE id = $1 AND workspace_id = $2 RETURNING {COLUMNS}"""
DELETE_DOMAIN = f"DELETE FROM pixel_domains WHERE id = $1 AND workspace_id = $2 RETURNING {COLUMNS}"
SELECT_HOST = "SELECT host FROM pixel_domains WHERE id = $1 AND workspace_id = $2"
LOCK_HOST = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
REVOKE_OTHERS = f"""
UPDATE pixel_domains SET verified_at = NULL, verification_method = NULL, verification_lost_at = now(),
    updated_at = now()
WHERE host = $1 AND id <> $2 AND verified_at IS NOT NULL RETURNING {COLUMNS}"""
MARK_VERIFIED = f"""
UPDATE pixel_domains SET verified_at = now(), verification_method = $3, verification_lost_at = NULL,
    updated_at = now()
WHERE id = $1 AND workspace_id = $2 RETURNING {COLUMNS}"""

LISTING = ListingSpec(
    from_sql="pixel_domains",
    select_sql=COLUMNS,
    sort_columns={f: f for f in ("id", "host", "created_at", "updated_at")},
    fields=(
        "id",
        "workspace_id",
        "host",
        "enabled",
        "features",
        "sample_rate",
        "session_timeout_minutes",
        "honor_privacy_signals",
        "excluded_paths",
        "visitor_id_rotation",
        "verification",
        "created_at",
        "updated_at",
    ),
    filters={"host": "host"},
    search_columns=("host",),
    date_columns={"created": "created_at", "updated": "updated_at"},
)


def with_parents(host: str) -> list[str]:
    """ "a.b.example.co.uk" → [a.b.example.co.uk, b.example.co.uk, example.co.uk]: the host, then
    each parent domain down to the registrable one (public suffixes are nobody's)."""
    labels = host.split(".")
    suffix_labels = (SUFFIXES.publicsuffix(host) or labels[-1]).count(".") + 1
    return [host] + [".".join(labels[i:]) for i in range(1, len(labels) - suffix_labels)]


def is_public_suffix(host: str) -> bool:
    return SUFFIXES.is_public(host)


def _config_args(config: dict) -> list:
    return [config.get(name) for name in CONFIG_FIELDS]


async def create_domain(pool: asyncpg.Pool, workspace_id: int, host: str, config: dict) -> dict:
    """Claim a host (unverified); Conflict when this workspace claims it already. A claim under a
    host another workspace has verified is allowed: it serves nothing until it is verified itself,
    and verifying is how a domain's new owner takes it over."""
    try:
        return returned(await pool.fetchrow(INSERT_DOMAIN, workspace_id, host, *_config_args(config)))
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"The host {host} is already registered in this workspace.") from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound(f"workspace {workspace_id}") from exc


async def get_domain(pool: asyncpg.Pool, workspace_id: int, domain_id: int) -> dict:
    row = await pool.fetchrow(SELECT_DOMAIN, domain_id, workspace_id)
    if row is None:
        raise NotFound(f"pixel domain {domain_id}")
    return dict(row)


async def find_claims(pool: asyncpg.Pool, hosts: list[str]) -> list[dict]:
    """Every workspace's claims on any of the hosts, verified or not."""
    return [dict(row) for row in await pool.fetch(SELECT_CLAIMS, hosts)]


async def list_domains(pool: asyncpg.Pool, workspace_id: int, query: ListQuery) -> tuple[list[dict], int]:
    return await fetch_page(pool, LISTING, query, "workspace_id = $1", [workspace_id])


async def update_domain(pool: asyncpg.Pool, workspace_id: int, domain_id: int, config: dict) -> dict:
    """Change the given config fields (None leaves one as it is)."""
    row = await pool.fetchrow(UPDATE_DOMAIN, domain_id, workspace_id, *_config_args(config))
    if row is None:
        raise NotFound(f"pixel domain {domain_id}")
    return dict(row)


async def delete_domain(pool: asyncpg.Pool, workspace_id: int, domain_id: int) -> dict:
    """Remove a claim; returns the deleted row (a verified host is then free for any workspace)."""
    row = await pool.fetchrow(DELETE_DOMAIN, domain_id, workspace_id)
    if row is None:
        raise NotFound(f"pixel domain {domain_id}")
    return dict(row)


async def mark_verified(pool: asyncpg.Pool, workspace_id: int, domain_id: int, method: str) -> dict:
    """Make this claim its host's verified one. Whoever held the host verified loses it: their row
    keeps verification_lost_at and their workspace hears pixel_domain.verification_lost."""
    async with pool.acquire() as conn, conn.transaction():
        host = await conn.fetchval(SELECT_HOST, domain_id, workspace_id)
        if host is None:
            raise NotFound(f"pixel domain {domain_id}")
        # The lock before any row lock: two verifications of one host then queue here, never
        # each holding a row the other wants.
        await conn.execute(LOCK_HOST, VERIFY_LOCK_CLASS, host)
        for lost in await conn.fetch(REVOKE_OTHERS, host, domain_id):
            await outbox.emit(
                conn,
                "pixel_domain.verification_lost",
                lost["workspace_id"],
                domain_events.verification_lost_payload(dict(lost)),
            )
        row = await conn.fetchrow(MARK_VERIFIED, domain_id, workspace_id, method)
        if row is None:  # deleted meanwhile: the revocations above roll back with the raise
            raise NotFound(f"pixel domain {domain_id}")
        return dict(row)
