"""HTTP: POST /api/v1/stats/query — the Stats API, modelled on Plausible's v2 query, over one site of
the key's workspace. Also what the MCP analytics tools run their queries through (`StatsReader`).

A query is validated (app/resources/stats_body.py), its site must be a domain the workspace
registered (any other, another workspace's included, is 404 as if it did not exist), its days are
the workspace's time zone's; it spends the workspace's ClickHouse time budget
(storage/redis/stats_budget.py; 429 when spent) and runs under max_execution_time (504 past it)
through the planner (storage/clickhouse/stats.py) on a thread.
"""

import asyncio
import csv
import io
import time
import weakref
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from blacksheep import Content, Response
from redis.asyncio import Redis

from app.http.bodies import read_json_object
from app.http.errors import ApiError, GatewayTimeout, ResourceNotFound, ValidationFailed, json_response
from app.http.presenters import DEFAULT_SETTINGS
from app.http.routing import Call, Route
from app.http.shapes import Choice, Free, Integer, List, Nullable, Object, Text, response
from app.pixel.domains import normalise_host
from app.resources import stats_body
from storage.clickhouse import stats
from storage.clickhouse.client import open_reader
from storage.config import Config
from storage.errors import StorageError, Unavailable
from storage.postgres import domains
from storage.postgres.workspace_cache import WorkspaceCache
from storage.redis.stats_budget import QueryBudget

CSV = b"text/csv; charset=utf-8"
# ClickHouse's error for a query past max_execution_time (code 159).
TIMED_OUT = ("TIMEOUT_EXCEEDED", "Code: 159.")


class BudgetSpent(ApiError):
    status, code = 429, "stats_budget_exceeded"

    def __init__(self, retry_after: int, budget_ms: int):
        super().__init__(
            f"This workspace's Stats API queries used their {budget_ms} ms of ClickHouse time for this minute. "
            f"Please retry after {retry_after} seconds.",
            retry_after=retry_after,
        )
        self.headers = [(b"Retry-After", str(retry_after).encode())]


class StatsReader:
    """Runs StatsQueries for a workspace: its budget first, then the planner on a thread."""

    def __init__(self, config: Config, budget: QueryBudget):
        self.budget_ms = config.api.stats_budget_ms
        seconds: float = config.api.stats_max_execution_seconds
        self.url = config.shared.clickhouse_url
        if self.url.startswith("chdb:"):
            # The worker's HTTP interface refuses a query asking for more time than its own limit.
            seconds = min(seconds, config.worker.clickhouse_http_max_execution_seconds)
        self.limits = {"max_execution_time": seconds}
        self.budget = budget

    async def run(self, query: stats.StatsQuery) -> stats.StatsResult:
        decision = await self.budget.admit(query.workspace_id, self.budget_ms)
        if not decision.allowed:
            raise BudgetSpent(decision.retry_after, self.budget_ms)
        started = time.monotonic()
        try:
            return await asyncio.to_thread(self._run, query)
        finally:
            await self.budget.spend(query.workspace_id, round((time.monotonic() - started) * 1000))

    def _run(self, query: stats.StatsQuery) -> stats.StatsResult:
        reader = open_reader(self.url)
        try:
            return stats.run(reader, query, self.limits)
        except stats.InvalidQuery as exc:
            raise ValidationFailed({"body": [str(exc)]}) from None
        except StorageError as exc:  # Unavailable, or ClickHouse refusing the query (QueryFailed)
            raise refusal(exc, self.limits["max_execution_time"]) from exc
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()


def refusal(exc: StorageError, seconds: float) -> Exception:
    """What a ClickHouse failure answers: 504 past max_execution_time, 422 for a pattern RE2 cannot
    compile, else 503 (our SQL refused means ClickHouse is not ready for it, e.g. no tables yet)."""
    if any(mark in str(exc) for mark in TIMED_OUT):
        return GatewayTimeout(f"The query ran longer than {seconds:g} s; narrow its date range, filters or dimensions.")
    if stats.BAD_REGEXP in str(exc):
        return ValidationFailed({"body": ["A matches filter holds an invalid regular expression (RE2 syntax)."]})
    return exc if isinstance(exc, Unavailable) else Unavailable("ClickHouse", str(exc))


# One reader per Redis client (per process): its budget script is loaded once, not per request.
READERS: "weakref.WeakKeyDictionary[Redis, StatsReader]" = weakref.WeakKeyDictionary()


def reader_for(config: Config, redis: Redis) -> StatsReader:
    reader = READERS.get(redis)
    if reader is None:
        reader = READERS[redis] = StatsReader(config, QueryBudget(redis))
    return reader


async def site_claim(pool: asyncpg.Pool, workspace_id: int, site: str) -> tuple[str, date]:
    """(host, the day it was first registered, UTC) of a site the workspace registered; 404 otherwise."""
    host = normalise_host(site)
    claims = [c for c in await domains.find_claims(pool, [host]) if c["workspace_id"] == workspace_id] if host else []
    if not claims:
        raise ResourceNotFound(f"Site {site[:100]!r} not found.")
    return host or "", min(c["created_at"] for c in claims).astimezone(UTC).date()


async def workspace_time_zone(workspaces: WorkspaceCache, workspace_id: int) -> str:
    workspace = await workspaces.get(workspace_id)
    return {**DEFAULT_SETTINGS, **workspace["settings"]}.get("timezone") or "UTC"


async def resolve(
    pool: asyncpg.Pool, workspaces: WorkspaceCache, workspace_id: int, request: stats_body.Request
) -> tuple[stats.StatsQuery, dict]:
    """The StatsQuery of a validated request, and the request as answered back in `query`."""
    host, registered = await site_claim(pool, workspace_id, request.site)
    time_zone = await workspace_time_zone(workspaces, workspace_id)
    query, (first, last) = stats_body.to_query(request, workspace_id, host, time_zone, datetime.now(UTC), registered)
    echo = {
        "site": host,
        "metrics": list(query.metrics),
        "date_range": [first.isoformat(), last.isoformat()],
        "dimensions": list(query.dimensions),
        "filters": stats_body.filter_list(query.filters),
        "order_by": [list(pair) for pair in query.order_by],
        "pagination": {"limit": query.limit, "offset": query.offset},
    }
    return query, echo


def answer_body(result: stats.StatsResult, time_zone: str, echo: dict, total_rows: bool) -> dict:
    meta: dict[str, Any] = {"source": result.source, "time_zone": time_zone}
    if total_rows:
        meta["total_rows"] = result.total_rows
    rows = [{"dimensions": list(dims), "metrics": list(values)} for dims, values in result.results]
    return {"results": rows, "meta": meta, "query": echo}


def csv_text(result: stats.StatsResult, query: stats.StatsQuery) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow([*query.dimensions, *query.metrics])
    for dims, values in result.results:
        writer.writerow(["" if v is None else v for v in (*dims, *values)])
    return out.getvalue().encode()


def wants_csv(call: Call) -> bool:
    accept = (call.request.get_first_header(b"Accept") or b"").decode("latin-1").lower()
    return "text/csv" in accept


async def query_stats(call: Call) -> Response:
    request = stats_body.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    workspace_id = call.principal.workspace_id
    query, echo = await resolve(call.pool, call.services.workspaces, workspace_id, request)
    reader = reader_for(call.services.config, call.services.redis)
    result = await reader.run(query)
    if wants_csv(call):
        return Response(200, None, Content(CSV, csv_text(result, query)))
    return json_response(200, answer_body(result, query.time_zone, echo, request.total_rows))


VALUE = Free(None, description="A string (dimensions), an integer (counts) or a number rounded to 2 decimals")
ANSWER = response(
    {
        "results": List(
            Object({"dimensions": List(VALUE, 100, min_items=0), "metrics": List(VALUE, 100)}),
            stats.MAX_LIMIT,
            min_items=0,
        ),
        "meta": Object(
            {
                "source": Choice(("rollup", "events"), description="rollup: served from hourly rollups"),
                "time_zone": Text(100, description="The workspace's time zone: days and time:* buckets are its"),
                "total_rows": Nullable(
                    Integer(0, 2**53),
                    description="With include.total_rows: the rows before pagination (null when not known cheaply)",
                ),
            },
            required=("source", "time_zone"),
        ),
        "query": Free("object", description="The query as run: the site, the date range as its first and last day"),
    }
)
ROUTES = [
    Route(
        "POST",
        "/api/v1/stats/query",
        query_stats,
        "stats:read",
        "Query a site's statistics (Plausible-style; CSV with Accept: text/csv)",
        "Stats",
        body=stats_body.BODY,
        answer=ANSWER,
        csv=True,
        errors=(404, 422, 429, 503, 504),
    )
]
