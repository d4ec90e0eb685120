"""SEO reports in Postgres: a report, its issues, the issue listing and a URL's score history."""

from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg

from storage.errors import NotFound
from storage.postgres.listing import ListingSpec, ListQuery, fetch_page
from storage.postgres.pool import Connection, returned

SCORES = ("performance", "accessibility", "best_practices", "seo")
REPORT_COLUMNS = "id, workspace_id, url, " + ", ".join(SCORES) + ", issue_count, created_at"
ISSUE_COLUMNS = "id, report_id, workspace_id, url, issue_type, severity, details, created_at"
# A page of history is a chart's worth of points; older ones are reached with `before`.
MAX_HISTORY = 500

INSERT_REPORT = f"""
INSERT INTO seo_reports (workspace_id, url, performance, accessibility, best_practices, seo, issue_count)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {REPORT_COLUMNS}"""
# One statement for every issue: unnest keeps the insert a single round trip however many.
INSERT_ISSUES = f"""
INSERT INTO seo_issues (report_id, workspace_id, url, issue_type, severity, details, created_at)
SELECT $1, $2, $3, i.issue_type, i.severity, i.details, $4
FROM unnest($5::text[], $6::text[], $7::jsonb[]) WITH ORDINALITY AS i(issue_type, severity, details, n)
ORDER BY i.n
RETURNING {ISSUE_COLUMNS}"""
SELECT_REPORT = f"SELECT {REPORT_COLUMNS} FROM seo_reports WHERE workspace_id = $1 AND id = $2"
SELECT_REPORT_ISSUES = f"SELECT {ISSUE_COLUMNS} FROM seo_issues WHERE report_id = $1 ORDER BY id"
SELECT_HISTORY = f"""
SELECT {REPORT_COLUMNS} FROM seo_reports
WHERE workspace_id = $1 AND url = $2
  AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4)
ORDER BY created_at DESC, id DESC LIMIT $5"""

ISSUE_LISTING = ListingSpec(
    from_sql="seo_issues",
    select_sql=ISSUE_COLUMNS,
    sort_columns={f: f for f in ("id", "created_at", "severity", "issue_type", "url", "report_id")},
    fields=("id", "report_id", "url", "issue_type", "severity", "details", "created_at"),
    filters={"severity": "severity", "issue_type": "issue_type", "url": "url", "report_id": "report_id::text"},
    search_columns=("url", "issue_type"),
    # Issues are never updated, so updated_* bounds mean the same as created_* ones.
    date_columns={"created": "created_at", "updated": "created_at"},
)
REPORT_LISTING = ListingSpec(
    from_sql="seo_reports",
    select_sql=REPORT_COLUMNS,
    sort_columns={f: f for f in ("id", "created_at", "url", "issue_count", *SCORES)},
    fields=("id", "url", "scores", "issue_count", "created_at"),
    filters={"url": "url"},
    search_columns=("url",),
    date_columns={"created": "created_at", "updated": "created_at"},
)

# Called inside the report's transaction (the outbox writer), so the event commits with it.
OnCreated = Callable[[Connection, dict], Awaitable[None]]


async def create_report(
    pool: asyncpg.Pool,
    workspace_id: int,
    url: str,
    scores: dict[str, int],
    issues: list[dict],
    on_created: OnCreated | None = None,
) -> dict:
    """Store a report and its issues atomically; returns the report with `issues`.

    Each issue is {"issue_type", "severity", "details"}.
    """
    async with pool.acquire() as conn, conn.transaction():
        report = returned(
            await conn.fetchrow(INSERT_REPORT, workspace_id, url, *(scores[name] for name in SCORES), len(issues))
        )
        rows = (
            await conn.fetch(
                INSERT_ISSUES,
                report["id"],
                workspace_id,
                url,
                report["created_at"],
                [i["issue_type"] for i in issues],
                [i["severity"] for i in issues],
                [i["details"] for i in issues],
            )
            if issues
            else []
        )
        report["issues"] = [dict(row) for row in rows]
        if on_created is not None:
            await on_created(conn, report)
    return report


async def get_report(pool: asyncpg.Pool, workspace_id: int, report_id: int) -> dict:
    """The report with its issues; NotFound also when it belongs to another workspace."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(SELECT_REPORT, workspace_id, report_id)
        if row is None:
            raise NotFound(f"seo report {report_id}")
        report = dict(row)
        report["issues"] = [dict(r) for r in await conn.fetch(SELECT_REPORT_ISSUES, report_id)]
    return report


async def list_issues(pool: asyncpg.Pool, workspace_id: int, query: ListQuery) -> tuple[list[dict], int]:
    return await fetch_page(pool, ISSUE_LISTING, query, "workspace_id = $1", [workspace_id])


async def list_reports(pool: asyncpg.Pool, workspace_id: int, query: ListQuery) -> tuple[list[dict], int]:
    return await fetch_page(pool, REPORT_LISTING, query, "workspace_id = $1", [workspace_id])


async def score_history(
    pool: asyncpg.Pool,
    workspace_id: int,
    url: str,
    since: datetime | None,
    before: datetime | None,
    limit: int,
) -> list[dict]:
    """The URL's reports, newest first, at most `limit` (≤ MAX_HISTORY)."""
    rows = await pool.fetch(SELECT_HISTORY, workspace_id, url, since, before, min(limit, MAX_HISTORY))
    return [dict(row) for row in rows]
