"""Built-in MCP server `analytics`: read-only questions about the caller's own workspace in
ClickHouse. Tools take parameters, never SQL (storage/clickhouse/analytics.py holds the queries);
the workspace id comes from the caller's API key and is not an argument at all.
"""

import asyncio
from datetime import UTC, date, datetime, timedelta

from app.http.errors import ValidationFailed
from app.http.presenters import iso
from app.http.validation import DATE_TIME, DATETIME_MAX_LEN, YEAR_MAX, YEAR_MIN, parse_datetime
from app.mcp_servers.registry import Caller, Tool
from storage.clickhouse import analytics
from storage.config import Config

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
# entitlements:read, so it needs that scope too.
READS = ("mcp:read",)
TOOLS = [
    Tool(
        "event_counts",
        "Count events by name over a time range",
        _schema(event={**NAME, "description": "Only this event name"}, limit=LIMIT),
        READS,
    ),
    Tool(
        "top_pages",
        "Busiest pages (path) over a time range, with their unique visitors",
        _schema(event={**NAME, "description": "Event to count, default pageview"}, limit=LIMIT),
        READS,
    ),
    Tool("unique_visitors", "Unique visitors over a time range, in total and per UTC day", _schema(), READS),
    Tool(
        "feature_usage",
        "Metered usage per feature over a time range",
        _schema(feature={**NAME, "description": "Only this feature"}, limit=LIMIT),
        READS + ("entitlements:read",),
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


def plain(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in row.items()}


class AnalyticsServer:
    kind = "builtin"
    resource_schemes = ()

    def __init__(self, server_id: str, name: str, description: str, config: Config, timeout: float):
        self.id, self.name, self.description = server_id, name, description
        self.timeout_seconds = timeout
        self.url = config.shared.clickhouse_url

    def known_tools(self) -> list[Tool]:
        return TOOLS

    async def list_tools(self) -> list[Tool]:
        return TOOLS

    async def call_tool(self, caller: Caller, name: str, arguments: dict) -> dict:
        start, end = time_range(arguments)
        result = await asyncio.to_thread(self._query, caller.workspace_id, name, arguments, start, end)
        return {"start": iso(start), "end": iso(end), **result}

    def _query(self, workspace_id: int, name: str, arguments: dict, start: datetime, end: datetime) -> dict:
        limit = arguments.get("limit", DEFAULT_LIMIT)
        reader = analytics.open_reader(self.url)
        try:
            if name == "event_counts":
                rows = analytics.event_counts(reader, workspace_id, start, end, arguments.get("event"), limit)
            elif name == "top_pages":
                rows = analytics.top_pages(reader, workspace_id, start, end, arguments.get("event", "pageview"), limit)
            elif name == "feature_usage":
                rows = analytics.feature_usage(reader, workspace_id, start, end, arguments.get("feature"), limit)
            else:
                total, by_day = analytics.unique_visitors(reader, workspace_id, start, end)
                return {"visitors": total, "by_day": [plain(r) for r in by_day]}
        finally:
            analytics.close_reader(reader)
        return {"rows": [plain(r) for r in rows]}

    async def read_resource(self, caller: Caller, uri: str) -> dict:
        raise NotImplementedError  # no resource schemes, so the registry never routes here
