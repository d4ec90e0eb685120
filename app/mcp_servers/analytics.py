"""Built-in MCP server `analytics`: read-only questions about the caller's own workspace in
ClickHouse. Tools take parameters, never SQL: event_counts, top_pages, unique_visitors and
stats_query are queries of the Stats API's planner (storage/clickhouse/stats.py, run through
app/resources/stats.py's StatsReader, so they spend the same per-workspace time budget);
feature_usage reads the usage log (storage/clickhouse/analytics.py). The workspace id comes from the
caller's API key and is not an argument at all.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis

from app.http.errors import ValidationFailed
from app.http.presenters import iso
from app.http.validation import DATE_TIME, DATETIME_MAX_LEN, YEAR_MAX, YEAR_MIN, parse_datetime
from app.mcp_servers.registry import Caller, Registry, Tool
from app.pixel.domains import STORED_HOST, normalise_host
from app.resources import stats_body
from app.resources.stats import StatsReader, answer_body, reader_for, resolve
from storage.clickhouse import analytics, stats
from storage.config import Config
from storage.errors import Unavailable
from storage.postgres.workspace_cache import WorkspaceCache

DEFAULT_DAYS = 7
# A year of daily rows is the widest range worth scanning per call.
MAX_RANGE = timedelta(days=366)
DEFAULT_LIMIT = 10
NAME = {"type": "string", "minLength": 1, "maxLength": 100}
# RFC 3339 as parse_datetime reads it (years 1970-9999), so the schema refuses what it would.
DATE = {"type": "string", "maxLength": DATETIME_MAX_LEN, "pattern": f"^(?:{DATE_TIME})$"}
RANGE = {
    "start": {**DATE, "description": f"RFC 3339 date-time or date; default {DEFAULT_DAYS} days ago"},
    "end": {**DATE, "description": "RFC 3339 date-time or date, exclusive; default now"},
}
SITE = {
    "type": "string",
    "maxLength": 253,
    "pattern": f"^{STORED_HOST}$",
    "description": "Only this host's events (lower case), counted as the Stats API counts (bots left out); "
    "default every host of the workspace",
}
LIMIT = {
    "type": "integer",
    "minimum": 1,
    "maximum": analytics.MAX_ROWS,
    "default": DEFAULT_LIMIT,
    "description": "Rows to return",
}


def _schema(**extra) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": {**RANGE, **extra}}


# Every tool reads (mcp:read); usage per feature is what GET /entitlements/summary shows under
# entitlements:read, and stats_query is POST /stats/query, so each needs that scope too.
READS = ("mcp:read",)
TOOLS = [
    Tool(
        "event_counts",
        "Count events by name over a time range",
        _schema(event={**NAME, "description": "Only this event name"}, limit=LIMIT, site=SITE),
        READS,
    ),
    Tool(
        "top_pages",
        "Busiest pages (path) over a time range, with their unique visitors",
        _schema(event={**NAME, "description": "Event to count, default pageview"}, limit=LIMIT, site=SITE),
        READS,
    ),
    Tool(
        "unique_visitors",
        "Unique visitors over a time range, in total and per UTC day",
        _schema(site=SITE),
        READS,
    ),
    Tool(
        "feature_usage",
        "Metered usage per feature over a time range",
        _schema(feature={**NAME, "description": "Only this feature"}, limit=LIMIT),
        READS + ("entitlements:read",),
    ),
    Tool(
        "stats_query",
        "The Stats API's query (POST /api/v1/stats/query's body) over one site of the workspace",
        stats_body.BODY.schema(),
        READS + ("stats:read",),
    ),
]


def time_range(arguments: dict) -> tuple[datetime, datetime]:
    errors: dict[str, list[str]] = {}
    bounds = {}
    for name in ("start", "end"):
        raw = arguments.get(name)
        if raw is None:
            continue
        try:
            bounds[name] = parse_datetime(raw)
        except ValueError:
            errors[f"arguments.{name}"] = [
                f"The {name} must be an ISO 8601 date-time in the years {YEAR_MIN}-{YEAR_MAX}."
            ]
    end = bounds.get("end") or datetime.now(UTC)
    start = bounds.get("start") or end - timedelta(days=DEFAULT_DAYS)
    if not errors and not start < end:
        errors["arguments.end"] = ["The end must be after the start."]
    elif not errors and end - start > MAX_RANGE:
        errors["arguments.start"] = [f"The range may not exceed {MAX_RANGE.days} days."]
    if errors:
        raise ValidationFailed(errors)
    return start, end


def planned(caller: Caller, arguments: dict, start: datetime, end: datetime, **fields) -> stats.StatsQuery:
    """A query over [start, end), days in UTC: of one site, or every site of the workspace without `site`."""
    site = arguments.get("site")
    host = None if site is None else normalise_host(site) or ""
    return stats.StatsQuery(
        workspace_id=caller.workspace_id, host=host, start=start, end=end, time_zone="UTC", **fields
    )


def event_filter(event: str | None) -> stats.Condition | None:
    return None if event is None else stats.Condition("is", "event:name", (event,))


class AnalyticsServer:
    kind = "builtin"
    resource_schemes = ()

    def __init__(self, server_id: str, name: str, description: str, config: Config, timeout: float):
        self.id, self.name, self.description = server_id, name, description
        self.timeout_seconds = timeout
        self.config = config
        self.url = config.shared.clickhouse_url
        self.pool: asyncpg.Pool | None = None
        self.workspaces: WorkspaceCache | None = None
        self.stats: StatsReader | None = None

    def connect(self, pool: asyncpg.Pool, redis: Redis, workspaces: WorkspaceCache) -> None:
        """What the Stats API's queries need, which the lifespan makes after the registry."""
        self.pool, self.workspaces = pool, workspaces
        self.stats = reader_for(self.config, redis)

    def known_tools(self) -> list[Tool]:
        return TOOLS

    async def list_tools(self) -> list[Tool]:
        return TOOLS

    async def call_tool(self, caller: Caller, name: str, arguments: dict) -> dict:
        if name == "stats_query":
            return await self.stats_query(caller, arguments)
        start, end = time_range(arguments)
        if name == "feature_usage":
            rows = await asyncio.to_thread(self._feature_usage, caller.workspace_id, arguments, start, end)
            return {"start": iso(start), "end": iso(end), "rows": rows}
        result = await self.planned_tool(caller, name, arguments, start, end)
        return {"start": iso(start), "end": iso(end), **result}

    async def planned_tool(self, caller: Caller, name: str, arguments: dict, start: datetime, end: datetime) -> dict:
        limit = arguments.get("limit", DEFAULT_LIMIT)
        if name == "event_counts":
            query = planned(
                caller,
                arguments,
                start,
                end,
                metrics=("events",),
                dimensions=("event:name",),
                filters=event_filter(arguments.get("event")),
                order_by=(("events", "desc"), ("event:name", "asc")),
                limit=limit,
            )
            return {"rows": [{"event": d[0], "events": m[0]} for d, m in (await self.run(query)).results]}
        if name == "top_pages":
            query = planned(
                caller,
                arguments,
                start,
                end,
                metrics=("events", "visitors"),
                dimensions=("event:page",),
                filters=event_filter(arguments.get("event", "pageview")),
                order_by=(("events", "desc"), ("event:page", "asc")),
                limit=limit,
            )
            rows = (await self.run(query)).results
            return {"rows": [{"path": d[0], "events": m[0], "visitors": m[1]} for d, m in rows]}
        total = await self.run(planned(caller, arguments, start, end, metrics=("visitors",)))
        by_day = planned(
            caller,
            arguments,
            start,
            end,
            metrics=("visitors",),
            dimensions=("time:day",),
            order_by=(("time:day", "asc"),),
            limit=analytics.MAX_ROWS,
        )
        days = [{"day": d[0], "visitors": m[0]} for d, m in (await self.run(by_day)).results]
        return {"visitors": total.results[0][1][0] if total.results else 0, "by_day": days}

    async def stats_query(self, caller: Caller, arguments: dict) -> dict:
        if self.pool is None or self.workspaces is None:
            raise Unavailable("Postgres", "the analytics server is not connected")
        try:
            request = stats_body.parse(arguments)
            query, echo = await resolve(self.pool, self.workspaces, caller.workspace_id, request)
            result = await self.run(query)
        except ValidationFailed as exc:  # named as the registry names a tool's arguments
            errors = exc.extra["errors"]
            raise ValidationFailed({f"arguments.{name}": messages for name, messages in errors.items()}) from None
        return answer_body(result, query.time_zone, echo, request.total_rows)

    async def run(self, query: stats.StatsQuery) -> stats.StatsResult:
        if self.stats is None:
            raise Unavailable("Redis", "the analytics server is not connected")
        return await self.stats.run(query)

    def _feature_usage(self, workspace_id: int, arguments: dict, start: datetime, end: datetime) -> list[dict]:
        reader = analytics.open_reader(self.url)
        try:
            feature, limit = arguments.get("feature"), arguments.get("limit", DEFAULT_LIMIT)
            return analytics.feature_usage(reader, workspace_id, start, end, feature, limit)
        finally:
            analytics.close_reader(reader)

    async def read_resource(self, caller: Caller, uri: str) -> dict:
        raise NotImplementedError  # no resource schemes, so the registry never routes here


def connect_servers(registry: Registry, pool: asyncpg.Pool, redis: Redis, workspaces: WorkspaceCache) -> None:
    """Hand the built-in analytics servers what their queries need (the registry is built first)."""
    for server in registry.servers.values():
        if isinstance(server, AnalyticsServer):
            server.connect(pool, redis, workspaces)
