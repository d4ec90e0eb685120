"""The Stats API's request body: its shape (shown in /openapi.json and as the MCP `stats_query`
tool's schema), its validation, and its date range resolved in the workspace's time zone, giving
storage's StatsQuery (storage/clickhouse/stats.py).

Pure: the caller looks up the site's claim and the workspace's time zone and passes them in, so
every rule is checked without I/O (tests/unit/app/test_stats_body.py).
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.http.errors import ValidationFailed
from app.http.shapes import NOT_BLANK, Boolean, Choice, Errors, Field, Integer, List, Object, Text, anchored, fail
from app.http.validation import MISSING, Missing
from storage.clickhouse import stats

DATE_RANGES = ("day", "7d", "30d", "month", "year", "all")
# Years ClickHouse's DateTime64 holds (1900-2299), from the Unix epoch on.
DATE = "(?:19[7-9][0-9]|2[0-2][0-9]{2})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
SITE_MAX = 253  # DNS: no claim is on a longer name
PROPERTY_NAME_MAX = 100
DIMENSIONS_MAX = 6
# A dashboard's segment is a handful of conditions; these bound what one request makes the planner build.
FILTER_DEPTH = 3  # ["not", ["and", [["is", …], …]]] nests three deep
FILTER_CONDITIONS_MAX = 20
VALUES_MAX = stats.MAX_VALUES
VALUE_MAX_LEN = stats.MAX_VALUE
PATTERN_MAX_LEN = stats.MAX_PATTERN
PATTERN_OPERATORS = tuple(o for o in stats.OPERATORS if o.startswith("matches"))  # RE2 patterns
PLAIN_OPERATORS = tuple(o for o in stats.OPERATORS if o not in PATTERN_OPERATORS)
OFFSET_MAX = 1_000_000
CONNECTIVES = ("and", "or")
DIRECTIONS = ("asc", "desc")
PROPERTY = stats.PROPERTY_PREFIX + NOT_BLANK


def allowed(values) -> str:
    return ", ".join(values)


class Name(Field):
    """A dimension (or a filter's dimension) from a fixed list, or `property:<name>`."""

    def __init__(self, names: tuple[str, ...], description: str):
        self.names, self.known = names, frozenset(names)
        self.description = description
        self.pattern = re.compile(PROPERTY)

    def schema(self) -> dict[str, Any]:
        return {
            "anyOf": [
                {"type": "string", "enum": list(self.names)},
                {
                    "type": "string",
                    "maxLength": len(stats.PROPERTY_PREFIX) + PROPERTY_NAME_MAX,
                    "pattern": anchored(PROPERTY),
                },
            ]
        }

    def read(self, value: Any, name: str, errors: Errors) -> str | Missing:
        if isinstance(value, str) and (
            value in self.known
            or (len(value) <= len(stats.PROPERTY_PREFIX) + PROPERTY_NAME_MAX and self.pattern.fullmatch(value))
        ):
            return value
        return fail(
            errors,
            name,
            f"The {name} must be one of: {allowed(self.names)}, or {stats.PROPERTY_PREFIX}<name> "
            f"(a custom property, at most {PROPERTY_NAME_MAX} characters).",
        )


class DateRange(Field):
    """A named period or two inclusive dates: ("7d") or (date, date)."""

    description = (
        "day: today; 7d, 30d: the last 7 or 30 days, today included; month, year: the calendar month or year "
        "holding today; all: from the day the site was registered; or [first, last], both included. Days are "
        "the workspace's (settings.timezone)."
    )
    example = "7d"

    def schema(self) -> dict[str, Any]:
        day = {"type": "string", "maxLength": 10, "pattern": anchored(DATE)}
        return {
            "oneOf": [
                {"type": "string", "enum": list(DATE_RANGES)},
                {"type": "array", "items": day, "minItems": 2, "maxItems": 2},
            ]
        }

    def read(self, value: Any, name: str, errors: Errors) -> str | tuple[date, date] | Missing:
        if isinstance(value, str) and value in DATE_RANGES:
            return value
        if isinstance(value, list) and len(value) == 2:
            days = [_day(item) for item in value]
            if days[0] is not None and days[1] is not None:
                if days[0] > days[1]:
                    return fail(errors, name, f"The {name}'s first day may not be after its last.")
                return days[0], days[1]
        return fail(
            errors,
            name,
            f"The {name} must be one of: {allowed(DATE_RANGES)}, or two dates [YYYY-MM-DD, YYYY-MM-DD] "
            "in the years 1970-2299.",
        )


def _day(value: Any) -> date | None:
    if not isinstance(value, str) or not re.fullmatch(DATE, value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:  # 2026-02-30
        return None


class Filters(Field):
    """Plausible's filter list: each item ["is", dimension, [values]], ["and"|"or", [filters]] or
    ["not", filter]; the list itself is an implicit "and". Shown unrolled FILTER_DEPTH deep."""

    description = (
        f'Each filter is ["<operator>", "<dimension>", ["<value>", …]] (any of the values), '
        f'["and" | "or", [<filter>, …]] or ["not", <filter>]; the list is an "and" of its filters. '
        f"At most {FILTER_DEPTH} levels deep and {FILTER_CONDITIONS_MAX} conditions. "
        'conversion_rate needs ["is", "event:goal", [<event names>]].'
    )
    example = [["is", "visit:country", ["DE", "FR"]], ["contains", "event:page", ["/blog"]]]

    def __init__(self) -> None:
        self.dimension = Name(stats.FILTER_DIMENSIONS, "")

    def condition_schema(self) -> dict[str, Any]:
        """A condition; the patterns of matches/matches_not are shorter than other values."""
        branches = []
        for operators, longest in ((PLAIN_OPERATORS, VALUE_MAX_LEN), (PATTERN_OPERATORS, PATTERN_MAX_LEN)):
            values = {"type": "array", "items": {"type": "string", "maxLength": longest}, "minItems": 1}
            branches.append(
                {
                    "type": "array",
                    "prefixItems": [
                        {"type": "string", "enum": list(operators)},
                        self.dimension.schema(),
                        {**values, "maxItems": VALUES_MAX},
                    ],
                    "minItems": 3,
                    "maxItems": 3,
                }
            )
        return {"anyOf": branches}

    def filter_schema(self, depth: int) -> dict[str, Any]:
        if depth == 1:
            return self.condition_schema()
        inner = self.filter_schema(depth - 1)
        combined = {
            "type": "array",
            "prefixItems": [
                {"type": "string", "enum": list(CONNECTIVES)},
                {"type": "array", "items": inner, "minItems": 1, "maxItems": FILTER_CONDITIONS_MAX},
            ],
            "minItems": 2,
            "maxItems": 2,
        }
        negated = {
            "type": "array",
            "prefixItems": [{"type": "string", "enum": ["not"]}, inner],
            "minItems": 2,
            "maxItems": 2,
        }
        return {"oneOf": [self.condition_schema(), combined, negated]}

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.filter_schema(FILTER_DEPTH), "maxItems": FILTER_CONDITIONS_MAX}

    def read(self, value: Any, name: str, errors: Errors) -> stats.Filter | None | Missing:
        if not isinstance(value, list):
            return fail(errors, name, f"The {name} must be an array of filters.")
        before = len(errors)
        read = [self.one(item, f"{name}[{i}]", errors, FILTER_DEPTH) for i, item in enumerate(value)]
        if len(errors) > before:
            return MISSING
        filters = [f for f in read if f is not None and f is not MISSING]
        if count_conditions(filters) > FILTER_CONDITIONS_MAX:
            return fail(errors, name, f"The {name} may hold at most {FILTER_CONDITIONS_MAX} conditions.")
        if not filters:
            return None
        return filters[0] if len(filters) == 1 else stats.Combined("and", tuple(filters))

    def one(self, value: Any, name: str, errors: Errors, depth: int) -> Any:
        if depth < 1:
            return fail(errors, name, f"Filters may nest at most {FILTER_DEPTH} levels deep.")
        if not isinstance(value, list) or not value or not isinstance(value[0], str):
            return fail(errors, name, f'The {name} must be a filter: ["<operator>", "<dimension>", [values]].')
        operator = value[0]
        if operator in CONNECTIVES and len(value) == 2 and isinstance(value[1], list) and value[1]:
            inner = [self.one(item, f"{name}[1][{i}]", errors, depth - 1) for i, item in enumerate(value[1])]
            return MISSING if MISSING in inner else stats.Combined(operator, tuple(inner))
        if operator == "not" and len(value) == 2:
            inner_filter = self.one(value[1], f"{name}[1]", errors, depth - 1)
            return MISSING if inner_filter is MISSING else stats.Negated(inner_filter)
        if operator in stats.OPERATORS and len(value) == 3:
            return self.condition(value, name, errors)
        if operator in (*CONNECTIVES, "not", *stats.OPERATORS):
            return fail(errors, name, f"The {name} has the wrong number or kind of items for {operator!r}.")
        return fail(
            errors, name, f"The {name}'s operator must be one of: {allowed((*stats.OPERATORS, *CONNECTIVES, 'not'))}."
        )

    def condition(self, value: list, name: str, errors: Errors) -> stats.Condition | Missing:
        dimension = self.dimension.read(value[1], f"{name}[1]", errors)
        values, longest = value[2], PATTERN_MAX_LEN if value[0] in PATTERN_OPERATORS else VALUE_MAX_LEN
        if (
            not isinstance(values, list)
            or not 1 <= len(values) <= VALUES_MAX
            or not all(isinstance(v, str) and len(v) <= longest for v in values)
        ):
            return fail(
                errors,
                f"{name}[2]",
                f"The {name}[2] must be 1 to {VALUES_MAX} strings of at most {longest} characters for {value[0]!r}.",
            )
        if dimension is MISSING:
            return MISSING
        return stats.Condition(value[0], dimension, tuple(values))


def count_conditions(filters) -> int:
    total = 0
    for item in filters:
        if isinstance(item, stats.Condition):
            total += 1
        elif isinstance(item, stats.Combined):
            total += count_conditions(item.filters)
        elif isinstance(item, stats.Negated):
            total += count_conditions([item.filter])
    return total


class OrderBy(Field):
    description = "[[<metric or dimension of this query>, asc | desc], …]"
    example = [["visitors", "desc"]]

    def schema(self) -> dict[str, Any]:
        item = {
            "type": "array",
            "prefixItems": [
                {"type": "string", "minLength": 1, "maxLength": 120},
                {"type": "string", "enum": ["asc", "desc"]},
            ],
            "minItems": 2,
            "maxItems": 2,
        }
        return {"type": "array", "items": item, "maxItems": DIMENSIONS_MAX + len(stats.METRICS)}

    def read(self, value: Any, name: str, errors: Errors) -> tuple[tuple[str, str], ...] | Missing:
        if not isinstance(value, list) or len(value) > DIMENSIONS_MAX + len(stats.METRICS):
            return fail(
                errors, name, f"The {name} must be an array of at most {DIMENSIONS_MAX + len(stats.METRICS)} pairs."
            )
        pairs = []
        for i, item in enumerate(value):
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[1] in DIRECTIONS):
                return fail(
                    errors, f"{name}[{i}]", f'The {name}[{i}] must be ["<metric or dimension>", "asc" | "desc"].'
                )
            pairs.append((item[0], item[1]))
        return tuple(pairs)


class Body(Object):
    """The body: an object with these fields, and the site as `site` or `site_id` (exactly one)."""

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "oneOf": [{"required": ["site"]}, {"required": ["site_id"]}]}

    def read(self, value: Any, name: str, errors: Errors) -> dict[str, Any] | Missing:
        read = super().read(value, name, errors)
        if isinstance(value, dict) and ("site" in value) == ("site_id" in value):
            fail(errors, "site", "Give the site as exactly one of site or site_id.")
            return MISSING
        return read


SITE = Text(SITE_MAX, description="A domain registered for the pixel in the key's workspace (POST /pixel/domains)")
BODY = Body(
    {
        "site": SITE,
        "site_id": Text(SITE_MAX, description="The same as site (Plausible's name)"),
        "metrics": List(
            Choice(stats.METRICS),
            max_items=len(stats.METRICS),
            unique=True,
            description="visitors: unique visitors; visits: sessions; pageviews; events: all events; bounce_rate: % of "
            "visits with one pageview; visit_duration: mean seconds; views_per_visit; conversion_rate: % of visitors "
            "who sent an event:goal of the filters; time_on_page: mean engaged seconds of the pageviews the script "
            "measured (1 decimal); scroll_depth: their mean deepest scroll, a whole %. The last two are pageviews' "
            "and take no event:name or event:goal",
        ),
        "date_range": DateRange(),
        "dimensions": List(
            Name(stats.DIMENSIONS, ""),
            max_items=DIMENSIONS_MAX,
            min_items=0,
            unique=True,
            description="Group by these; time:* buckets are ISO dates/times in the workspace's time zone",
        ),
        "filters": Filters(),
        "order_by": OrderBy(),
        "pagination": Object(
            {
                "limit": Integer(1, stats.MAX_LIMIT, description=f"Rows to return (default {stats.MAX_LIMIT})"),
                "offset": Integer(0, OFFSET_MAX, description="Rows to skip"),
            }
        ),
        "include": Object({"total_rows": Boolean(description="meta.total_rows: the rows before pagination")}),
    },
    required=("metrics", "date_range"),
)
BODY.example = {
    "site": "shop.example",
    "metrics": ["visitors", "pageviews", "bounce_rate"],
    "date_range": "30d",
    "dimensions": ["visit:country"],
    "filters": [["is", "event:name", ["pageview"]]],
    "order_by": [["visitors", "desc"]],
    "pagination": {"limit": 10},
}


@dataclass(frozen=True)
class Request:
    """A validated body, before its site and date range are resolved."""

    site: str
    metrics: tuple[str, ...]
    date_range: str | tuple[date, date]
    dimensions: tuple[str, ...]
    filters: stats.Filter | None
    order_by: tuple[tuple[str, str], ...]
    limit: int
    offset: int
    total_rows: bool


def parse(data: Any) -> Request:
    """The body as a Request; ValidationFailed naming every bad field."""
    body = BODY.parse(data)
    metrics, dimensions = tuple(body["metrics"]), tuple(body.get("dimensions", ()))
    order_by = body.get("order_by", ())
    named = set(metrics) | set(dimensions)
    errors = {
        f"order_by[{i}]": [
            f"The order_by[{i}] must name a metric or dimension of this query: {allowed(sorted(named))}."
        ]
        for i, (name, _) in enumerate(order_by)
        if name not in named
    }
    if errors:
        raise ValidationFailed(errors)
    pagination = body.get("pagination", {})
    return Request(
        site=body.get("site", body.get("site_id", "")),
        metrics=metrics,
        date_range=body["date_range"],
        dimensions=dimensions,
        filters=body.get("filters"),
        order_by=order_by,
        limit=pagination.get("limit", stats.MAX_LIMIT),
        offset=pagination.get("offset", 0),
        total_rows=body.get("include", {}).get("total_rows", False),
    )


def days_of(date_range: str | tuple[date, date], today: date, first_day: date) -> tuple[date, date]:
    """The first and last day (both included) of a range, `today` being the workspace's."""
    if isinstance(date_range, tuple):
        return date_range
    if date_range == "day":
        return today, today
    if date_range in ("7d", "30d"):
        return today - timedelta(days=int(date_range[:-1]) - 1), today
    if date_range == "month":
        following = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
        return today.replace(day=1), following - timedelta(days=1)
    if date_range == "year":
        return today.replace(month=1, day=1), today.replace(month=12, day=31)
    return min(first_day, today), today  # all


def to_query(
    request: Request, workspace_id: int, host: str, time_zone: str, now: datetime, first_day: date
) -> tuple[stats.StatsQuery, tuple[date, date]]:
    """The StatsQuery for a site of the workspace, and the days it covers."""
    zone = ZoneInfo(time_zone)
    first, last = days_of(request.date_range, now.astimezone(zone).date(), first_day)
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(last + timedelta(days=1), time(), zone)
    query = stats.StatsQuery(
        workspace_id=workspace_id,
        host=host,
        metrics=request.metrics,
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        time_zone=time_zone,
        dimensions=request.dimensions,
        filters=request.filters,
        order_by=request.order_by,
        limit=request.limit,
        offset=request.offset,
    )
    return query, (first, last)


def filter_list(item: stats.Filter | None) -> list:
    """A filter back in the list form the body uses (the echo in `query`)."""
    if item is None:
        return []
    if isinstance(item, stats.Combined) and item.operator == "and":
        return [_plain(f) for f in item.filters]
    return [_plain(item)]


def _plain(item: stats.Filter) -> list:
    if isinstance(item, stats.Condition):
        return [item.operator, item.dimension, list(item.values)]
    if isinstance(item, stats.Combined):
        return [item.operator, [_plain(f) for f in item.filters]]
    return ["not", _plain(item.filter)]
