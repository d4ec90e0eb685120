"""Storage: the Stats API's queries (Plausible's Stats API v2 model), planned into ClickHouse SQL and run.

SQL is assembled only from constants chosen by name (a dimension's column expression, a metric's
aggregate); every value from the query is a typed bind parameter, and the workspace (and the site,
unless a query asks for all of them) always constrain it. Bots (`events.is_bot`) are never counted.
Engagement events (pixel.js's time and scroll measurements) are not something a visitor did: no
metric counts them but time_on_page and scroll_depth, as Plausible does (they still end a visit:
visit_duration runs to the last engaged moment).

Two scopes, joined on the dimensions when a query asks for both:
- event metrics (visitors, pageviews, events, conversion_rate) aggregate events: from the
  narrowest `stats_hourly*` rollup that keeps every dimension and filter, the range starts and ends
  on whole hours and, for time:* dimensions, the time zone's offset is whole hours over the range;
  otherwise from `events`. `source` says which.
- visit metrics (visits, bounce_rate, visit_duration, views_per_visit) aggregate sessions as the
  `sessions` view defines them, computed from the events of the sessions with an event in the
  range (a day either side is read, so a session crossing a range edge is whole): sessions of the
  host that started in the range, late ones left out (as `sessions_daily`);
  time:* buckets are those of the session's start. Always from raw rows. A visit cannot be split
  by event:* or property:* dimensions: asking for both is InvalidQuery.
- engagement metrics (time_on_page, scroll_depth) are event metrics over pageviews: each pageview in
  the range with an engagement event (schema/0010_engagement.sql; its events are read up to a day
  past the range) counts once, with the sum of their engaged_ms and the max of their scroll_depth.
  Dimensions and filters apply to the pageview's row, so time:* buckets are the pageview's; event:name
  and event:goal would select other events, so asking for them is InvalidQuery. Always from raw rows.
  Unlike Plausible, no event:page is needed: without it the average is over every page.
visit:* values are the session's first event's. For country, region, city, device, browser, os and
their versions an event's own value is that: a visitor id is one address and one user agent, so
they do not change within a visit, and the rollup serves them honestly (country, device, browser,
os; the others would multiply its rows). Source, channel, referrer, UTM and entry/exit pages do
change, so event metrics join them from the session's own events (never from the rollup); an event with
sessions off (session 0) uses its own.
Filters: event-level conditions (event:name, event:page, event:goal, property:*) restrict event
metrics row by row and visit metrics to sessions with such an event (a negated operator: without
one). event:goal values are event names.
Visitors are `uniq` on both paths (as Plausible): exact below 65,536 visitors, and merging the
rollup's states gives the same number as counting the raw rows. Rates and durations are rounded to
2 decimals, time_on_page (seconds) to 1; bounce_rate and conversion_rate are percentages, and
scroll_depth a whole percentage.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from storage.clickhouse.client import QueryFailed
from storage.errors import Unavailable

METRICS = (
    "visitors",
    "visits",
    "pageviews",
    "events",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
    "conversion_rate",
    "time_on_page",
    "scroll_depth",
)
VISIT_METRICS = ("visits", "bounce_rate", "visit_duration", "views_per_visit")
ENGAGEMENT_METRICS = ("time_on_page", "scroll_depth")
# Decimal places of a metric's value; the others are integers.
DECIMALS = {"bounce_rate": 2, "visit_duration": 2, "views_per_visit": 2, "conversion_rate": 2, "time_on_page": 1}
PROPERTY_PREFIX = "property:"
OPERATORS = ("is", "is_not", "contains", "contains_not", "matches", "matches_not")
MAX_LIMIT = 10_000
# Guards on what a caller may send: RE2 compiles a 256-character pattern quickly; the rest keep
# one query's SQL and parameters small.
MAX_PATTERN = 256
MAX_VALUE = 2_000
MAX_VALUES = 100
MAX_CONDITIONS = 50
MAX_DEPTH = 8
MAX_PROPERTY_NAME = 300
# ClickHouse: CANNOT_COMPILE_REGEXP, the one refusal a valid-looking query can earn from its input.
BAD_REGEXP = "Code: 427"

# The session's first-event values, read through the join in event scope (s_<column>).
_FIRST_COLUMNS = ("entry_page", "exit_page", "referrer", "referrer_source", "channel") + tuple(
    f"utm_{x}" for x in ("source", "medium", "campaign", "term", "content")
)


@dataclass(frozen=True)
class _Dim:
    event: str | None  # expression over an events row (or a stats_hourly row when `rollup`)
    visit: str  # expression over a sessions row
    rollup: bool = False
    first: bool = False  # event scope needs the sessions join


def _first(column: str, own: str | None = None) -> _Dim:
    fallback = own or "''"
    return _Dim(f"if(session_id = 0, {fallback}, s_{column})", column, first=True)


_EVENT_ONLY = "session_id IN (SELECT session_id FROM events WHERE {base} AND session_id != 0 AND {cond})"
DIMS: dict[str, _Dim] = {
    "event:name": _Dim("event", "", rollup=True),  # visit scope: a session IN (…) test, never a column
    "event:page": _Dim("path", "", rollup=True),
    "event:hostname": _Dim("host", "host", rollup=True),
    "visit:entry_page": _first("entry_page"),
    "visit:exit_page": _first("exit_page"),
    "visit:source": _first("referrer_source", "referrer_source"),
    "visit:channel": _first("channel", "channel"),
    "visit:referrer": _first("referrer", "referrer"),
    **{f"visit:utm_{x}": _first(f"utm_{x}", f"utm_{x}") for x in ("source", "medium", "campaign", "term", "content")},
    **{f"visit:{c}": _Dim(c, c, rollup=True) for c in ("country", "device", "browser", "os")},
    **{f"visit:{c}": _Dim(c, c) for c in ("region", "city", "browser_version", "os_version")},
}
# Time buckets as ISO text in the query's time zone; $t is the time column of the scope.
TIME_DIMS = {
    "time:hour": "formatDateTime($t, '%Y-%m-%d %H:00:00', {tz:String})",
    "time:day": "formatDateTime($t, '%Y-%m-%d', {tz:String})",
    "time:week": "formatDateTime(toMonday(toTimeZone($t, {tz:String})), '%Y-%m-%d')",
    "time:month": "formatDateTime(toStartOfMonth(toTimeZone($t, {tz:String})), '%Y-%m-%d')",
}
DIMENSIONS = (
    "event:name", "event:page", "event:hostname", "visit:entry_page", "visit:exit_page",
    "visit:source", "visit:channel", "visit:referrer", "visit:utm_source", "visit:utm_medium",
    "visit:utm_campaign", "visit:utm_term", "visit:utm_content", "visit:country",
    "visit:region", "visit:city", "visit:device", "visit:browser", "visit:browser_version",
    "visit:os", "visit:os_version", "time:hour", "time:day", "time:week", "time:month",
)  # fmt: skip
assert set(DIMENSIONS) == set(DIMS) | set(TIME_DIMS)
FILTER_DIMENSIONS = tuple(DIMS) + ("event:goal",)
_EVENT_LEVEL = ("event:name", "event:page", "event:goal")
_PROPERTY = (
    "if(JSONType(properties, {k}) = 'String', JSONExtractString(properties, {k}), JSONExtractRaw(properties, {k}))"
)

EVENTS_WHERE = """workspace_id = {workspace_id:UInt64} AND NOT is_bot AND event != 'engagement'
  AND ({host:Nullable(String)} IS NULL OR host = {host:Nullable(String)})
  AND time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND time < fromUnixTimestamp64Milli({end:Int64}, 'UTC')"""
ROLLUP_WHERE = """workspace_id = {workspace_id:UInt64} AND event != 'engagement'
  AND ({host:Nullable(String)} IS NULL OR host = {host:Nullable(String)})
  AND hour >= toDateTime(intDiv({start:Int64}, 1000), 'UTC') AND hour < toDateTime(intDiv({end:Int64}, 1000), 'UTC')"""
SESSIONS_WHERE = f"""workspace_id = {{workspace_id:UInt64}}
  AND session_id IN (SELECT session_id FROM events WHERE {EVENTS_WHERE} AND session_id != 0)
  AND ({{host:Nullable(String)}} IS NULL OR host = {{host:Nullable(String)}}) AND NOT is_late
  AND start >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC')
  AND start < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC')"""
# A session's first-event values for event-scope queries, from its own events: the `sessions` view
# gives the same values but finalises every column's aggregate state, 10x slower. Its events are
# looked for within a day either side of the range (a session longer than that takes its values
# from the part inside), and only sessions with an event in the range are aggregated.
FIRST_VALUE = {"entry_page": "argMinIf(path, (time, event_id), event = 'pageview')"} | {
    "exit_page": "argMaxIf(path, (time, event_id), event = 'pageview')"
}
# The events of the sessions with an event in the range, a day either side of it.
SESSION_EVENTS = f"""workspace_id = {{workspace_id:UInt64}} AND session_id != 0
    AND time >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC') - INTERVAL 1 DAY
    AND time < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC') + INTERVAL 1 DAY
    AND session_id IN (SELECT session_id FROM events WHERE {EVENTS_WHERE} AND session_id != 0)"""
FIRST_JOIN = f"""
LEFT JOIN (
  SELECT session_id AS s_id,
    {", ".join(f"{FIRST_VALUE.get(c, f'argMin(toString({c}), (time, event_id))')} AS s_{c}" for c in _FIRST_COLUMNS)}
  FROM events
  WHERE {SESSION_EVENTS}
  GROUP BY session_id
) AS s ON e.session_id = s.s_id"""
# The `sessions` view's rows for the sessions with an event in the range, computed from their
# events (the same rules as storage/clickhouse/schema/0008_sessions.sql; 5-10x faster than the
# view, which finalises every session's aggregate states).
_SESSION_FIRST = (
    ("host", "referrer", "referrer_source", "channel")
    + tuple(f"utm_{x}" for x in ("source", "medium", "campaign", "term", "content"))
    + ("country", "region", "city", "device", "browser", "browser_version", "os", "os_version")
)
SESSIONS_FROM_EVENTS = f"""(
  SELECT workspace_id, session_id, bitTest(session_id, 63) AS is_late, x_visitor_id AS visitor_id,
    x_start AS start, x_end AS end, toUInt32(dateDiff('second', x_start, x_end)) AS duration,
    x_pageviews AS pageviews, x_events AS events, x_interactions AS interactions,
    x_pageviews = 1 AND x_interactions = 0 AS is_bounce, x_entry_page AS entry_page, x_exit_page AS exit_page,
    {", ".join(f"x_{c} AS {c}" for c in _SESSION_FIRST)}
  FROM (
    SELECT workspace_id, session_id, argMin(visitor_id, (time, event_id)) AS x_visitor_id,
      min(time) AS x_start, max(time) AS x_end, countIf(event = 'pageview') AS x_pageviews, count() AS x_events,
      countIf(event NOT IN ('pageview', 'engagement')) AS x_interactions,
      argMinIf(path, (time, event_id), event = 'pageview') AS x_entry_page,
      argMaxIf(path, (time, event_id), event = 'pageview') AS x_exit_page,
      {", ".join(f"argMin(toString({c}), (time, event_id)) AS x_{c}" for c in _SESSION_FIRST)}
    FROM events
    WHERE {SESSION_EVENTS}
    GROUP BY workspace_id, session_id
  )
) AS sessions"""
# Each pageview's engagement: what its engagement events (schema/0010_engagement.sql) add up to. An
# engagement event comes after its pageview, up to a day after the range for a pageview near its end.
ENGAGEMENT_JOIN = """
LEFT JOIN (
  SELECT pageview_id AS g_id, sum(engaged_ms) AS g_ms, max(scroll_depth) AS g_depth, 1 AS g_seen
  FROM events
  WHERE workspace_id = {workspace_id:UInt64} AND event = 'engagement' AND pageview_id != ''
    AND time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')
    AND time < fromUnixTimestamp64Milli({end:Int64}, 'UTC') + INTERVAL 1 DAY
  GROUP BY pageview_id
) AS g ON e.pageview_id = g.g_id"""
# Over the pageviews with engagement (an unmatched row reads g_seen 0); 0 when there are none.
ENGAGED = "event = 'pageview' AND g_seen = 1"
ENGAGEMENT_AGGREGATES = {
    "time_on_page": f"if(countIf({ENGAGED}) = 0, 0, round(avgIf(g_ms, {ENGAGED}) / 1000, 1))",
    "scroll_depth": f"if(countIf({ENGAGED}) = 0, 0, round(avgIf(g_depth, {ENGAGED})))",
}
# Event metrics over events rows / stats_hourly rows; $c is the condition a goal adds (see run()).
EVENT_AGGREGATES = {
    "visitors": ("uniqIf(visitor_id, $c)", "uniqMergeIf(visitors, $c)"),
    "pageviews": ("countIf(event = 'pageview' AND $c)", "sumIf(pageviews, $c)"),
    "events": ("countIf($c)", "sumIf(events, $c)"),
    "conversion_rate": (
        "if(uniq(visitor_id) = 0, 0, round(100 * uniqIf(visitor_id, $c) / uniq(visitor_id), 2))",
        "if(uniqMerge(visitors) = 0, 0, round(100 * uniqMergeIf(visitors, $c) / uniqMerge(visitors), 2))",
    ),
}
VISIT_AGGREGATES = {
    "visits": "count()",
    "bounce_rate": "if(count() = 0, 0, round(100 * countIf(is_bounce) / count(), 2))",
    "visit_duration": "if(count() = 0, 0, round(avg(duration), 2))",
    "views_per_visit": "if(count() = 0, 0, round(sum(pageviews) / count(), 2))",
}
# The rollups, narrowest first, and the columns each keeps (schema/0009_stats_rollups.sql).
ROLLUPS = (
    ("stats_hourly_sites", {"host", "event"}),
    ("stats_hourly_pages", {"host", "event", "path"}),
    ("stats_hourly", {"host", "event", "path", "country", "device", "browser", "os"}),
)
SETTING_NAME = re.compile(r"^[a-z_]{1,64}$")


class InvalidQuery(ValueError):
    """A query the planner cannot serve; the message is meant for the caller."""


@dataclass(frozen=True)
class Condition:
    operator: str
    dimension: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Combined:
    operator: str  # "and" | "or"
    filters: tuple["Filter", ...]


@dataclass(frozen=True)
class Negated:
    filter: "Filter"


Filter = Condition | Combined | Negated


@dataclass(frozen=True)
class StatsQuery:
    workspace_id: int
    host: str | None  # the site; None: every site of the workspace (the MCP tools without `site`)
    metrics: tuple[str, ...]
    start: datetime
    end: datetime
    time_zone: str
    dimensions: tuple[str, ...] = ()
    filters: Filter | None = None
    order_by: tuple[tuple[str, str], ...] = ()
    limit: int = MAX_LIMIT
    offset: int = 0


@dataclass(frozen=True)
class StatsResult:
    results: list[tuple[list, list]]
    source: str  # "rollup" | "events"
    total_rows: int | None


@dataclass
class _Params:
    values: dict = field(default_factory=dict)

    def add(self, type_: str, value) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{type_}}}"


# --- validation ------------------------------------------------------------------------------


def _validate(query: StatsQuery) -> None:
    if query.workspace_id <= 0 or query.host == "":
        raise InvalidQuery("a query needs its workspace, and a site unless it reads all of them")
    if not query.metrics or len(set(query.metrics)) != len(query.metrics):
        raise InvalidQuery("metrics must be a non-empty list without repeats")
    for metric in query.metrics:
        if metric not in METRICS:
            raise InvalidQuery(f"unknown metric {metric!r}")
    if len(set(query.dimensions)) != len(query.dimensions):
        raise InvalidQuery("dimensions must not repeat")
    for dim in query.dimensions:
        if dim not in DIMENSIONS and not _is_property(dim):
            raise InvalidQuery(f"unknown dimension {dim!r}")
    if query.start.tzinfo is None or query.end.tzinfo is None or query.start >= query.end:
        raise InvalidQuery("the date range needs an aware start before its end")
    _zone(query.time_zone)
    if not 1 <= query.limit <= MAX_LIMIT or query.offset < 0:
        raise InvalidQuery(f"limit must be 1 to {MAX_LIMIT} and offset at least 0")
    for name, direction in query.order_by:
        if direction not in ("asc", "desc") or (name not in query.metrics and name not in query.dimensions):
            raise InvalidQuery(f"order_by {name!r} {direction!r}: a requested metric or dimension, asc or desc")
    if query.filters is not None:
        _validate_filter(query.filters, 1, [0])
    visit = [m for m in query.metrics if m in VISIT_METRICS]
    split = [d for d in query.dimensions if d.startswith(("event:name", "event:page", PROPERTY_PREFIX))]
    if visit and split:
        raise InvalidQuery(f"{visit[0]} cannot be broken down by {split[0]}: a visit spans several events")
    if "conversion_rate" in query.metrics and _split_goal(query.filters)[0] is None:
        raise InvalidQuery('conversion_rate needs an ["is", "event:goal", [...]] filter at the top level')
    engagement = [m for m in query.metrics if m in ENGAGEMENT_METRICS]
    names = [d for d in (*query.dimensions, *sorted(_filter_dims(query.filters))) if d in ("event:name", "event:goal")]
    if engagement and names:
        raise InvalidQuery(f"{engagement[0]} is measured on pageviews: {names[0]} does not apply to it")


def _validate_filter(f: Filter, depth: int, count: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise InvalidQuery(f"filters nest at most {MAX_DEPTH} deep")
    if isinstance(f, Negated):
        return _validate_filter(f.filter, depth + 1, count)
    if isinstance(f, Combined):
        if f.operator not in ("and", "or") or not f.filters:
            raise InvalidQuery('"and"/"or" take a non-empty list of filters')
        for child in f.filters:
            _validate_filter(child, depth + 1, count)
        return None
    count[0] += 1
    if count[0] > MAX_CONDITIONS:
        raise InvalidQuery(f"at most {MAX_CONDITIONS} filter conditions")
    if f.operator not in OPERATORS:
        raise InvalidQuery(f"unknown filter operator {f.operator!r}")
    if f.dimension not in FILTER_DIMENSIONS and not _is_property(f.dimension):
        raise InvalidQuery(f"cannot filter by {f.dimension!r}")
    if f.dimension == "event:goal" and f.operator != "is":
        raise InvalidQuery('event:goal takes the "is" operator')
    if not 1 <= len(f.values) <= MAX_VALUES or not all(isinstance(v, str) for v in f.values):
        raise InvalidQuery(f"a filter takes 1 to {MAX_VALUES} string values")
    longest = MAX_PATTERN if f.operator.startswith("matches") else MAX_VALUE
    if any(len(v) > longest for v in f.values):
        raise InvalidQuery(f"filter values for {f.operator!r} are at most {longest} characters")
    return None


def _is_property(name: str) -> bool:
    return name.startswith(PROPERTY_PREFIX) and 0 < len(name) - len(PROPERTY_PREFIX) <= MAX_PROPERTY_NAME


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise InvalidQuery(f"unknown time zone {name!r}") from exc


def _split_goal(f: Filter | None) -> tuple[Condition | None, Filter | None]:
    """(the top-level event:goal condition, the filter without it)."""
    if isinstance(f, Condition) and f.dimension == "event:goal":
        return f, None
    if isinstance(f, Combined) and f.operator == "and":
        for i, child in enumerate(f.filters):
            if isinstance(child, Condition) and child.dimension == "event:goal":
                rest = f.filters[:i] + f.filters[i + 1 :]
                return child, (Combined("and", rest) if rest else None)
    return None, f


# --- planning ------------------------------------------------------------------------------


def _filter_dims(f: Filter | None) -> set[str]:
    if f is None:
        return set()
    if isinstance(f, Negated):
        return _filter_dims(f.filter)
    if isinstance(f, Combined):
        return set().union(*(_filter_dims(c) for c in f.filters))
    return {f.dimension}


def _whole_hours(query: StatsQuery) -> bool:
    """Whether the range starts and ends on UTC hours and, with time:* dimensions, the zone's
    offset is whole hours throughout it (sampled daily: offsets last months)."""
    if any(int(t.timestamp()) % 3600 for t in (query.start, query.end)):
        return False
    if not any(d in TIME_DIMS for d in query.dimensions):
        return True
    zone, step = _zone(query.time_zone), max(timedelta(days=1), (query.end - query.start) / 4000)
    moment = query.start
    while True:
        offset = moment.astimezone(zone).utcoffset() or timedelta()
        if offset.total_seconds() % 3600:
            return False
        if moment >= query.end:
            return True
        moment = min(moment + step, query.end)


def _rollup_for(query: StatsQuery) -> str | None:
    """The narrowest rollup that answers `query`, if any."""
    if any(m in VISIT_METRICS or m in ENGAGEMENT_METRICS for m in query.metrics):
        return None
    needed = set()
    for dim in set(query.dimensions) | _filter_dims(query.filters):
        if dim == "event:goal":
            needed.add("event")
        elif dim in DIMS and DIMS[dim].rollup:
            needed.add(DIMS[dim].event or "")
        elif dim not in TIME_DIMS:
            return None
    table = next((name for name, columns in ROLLUPS if needed <= columns), None)
    return table if table is not None and _whole_hours(query) else None


class _Compiler:
    """Turns filters into SQL over one scope: "event" rows (events or stats_hourly) or "visit" rows (sessions)."""

    def __init__(self, params: _Params, scope: str):
        self.params, self.scope = params, scope

    def filter(self, f: Filter) -> str:
        if isinstance(f, Negated):
            return f"NOT ({self.filter(f.filter)})"
        if isinstance(f, Combined):
            return "(" + f" {f.operator.upper()} ".join(self.filter(c) for c in f.filters) + ")"
        negative = f.operator.endswith("_not")
        if self.scope == "visit" and (f.dimension in _EVENT_LEVEL or f.dimension.startswith(PROPERTY_PREFIX)):
            inner = _EVENT_ONLY.format(base=EVENTS_WHERE, cond=self.condition(f, self.event_column(f.dimension)))
            return f"NOT ({inner})" if negative else inner
        column = self.event_column(f.dimension) if self.scope == "event" else DIMS[f.dimension].visit
        positive = self.condition(f, column)
        return f"NOT ({positive})" if negative else positive

    def event_column(self, dimension: str) -> str:
        if dimension.startswith(PROPERTY_PREFIX):
            return _PROPERTY.replace("{k}", self.params.add("String", dimension[len(PROPERTY_PREFIX) :]))
        if dimension == "event:goal":
            return "event"
        return DIMS[dimension].event or ""

    def condition(self, f: Condition, column: str) -> str:
        """The positive form of `f` (is, contains, matches) over `column`."""
        if f.operator.startswith("is"):
            return f"{column} IN {self.params.add('Array(String)', list(f.values))}"
        if f.operator.startswith("contains"):
            tests = [f"position({column}, {self.params.add('String', v)}) > 0" for v in f.values]
        else:
            tests = [f"match({column}, {self.params.add('String', v)})" for v in f.values]
        return "(" + " OR ".join(tests) + ")"


def _dimension_sql(dim: str, scope: str, params: _Params, rollup: bool) -> str:
    if dim in TIME_DIMS:
        column = "start" if scope == "visit" else ("hour" if rollup else "time")
        return TIME_DIMS[dim].replace("$t", column)
    if dim.startswith(PROPERTY_PREFIX):
        return _PROPERTY.replace("{k}", params.add("String", dim[len(PROPERTY_PREFIX) :]))
    spec = DIMS[dim]
    return f"toString({spec.visit if scope == 'visit' else spec.event})"


def _event_sql(query: StatsQuery, metrics: list[tuple[int, str]], params: _Params, table: str | None) -> str:
    rollup = table is not None
    goal, rest = _split_goal(query.filters) if "conversion_rate" in query.metrics else (None, query.filters)
    compiler = _Compiler(params, "event")
    goal_sql = compiler.filter(goal) if goal is not None else "1"
    dims = [f"{_dimension_sql(d, 'event', params, rollup)} AS d{i}" for i, d in enumerate(query.dimensions)]
    aggs = [f"{_event_aggregate(m, rollup).replace('$c', goal_sql)} AS m{i}" for i, m in metrics]
    used = set(query.dimensions) | _filter_dims(query.filters)
    join = "" if rollup or not any(d in DIMS and DIMS[d].first for d in used) else FIRST_JOIN
    if any(m in ENGAGEMENT_METRICS for _, m in metrics):
        join += ENGAGEMENT_JOIN
    where = ROLLUP_WHERE if rollup else EVENTS_WHERE
    if rest is not None:
        where += f"\n  AND {compiler.filter(rest)}"
    return _select(dims, aggs, f"{table or 'events AS e'}{join}", where, len(query.dimensions))


def _event_aggregate(metric: str, rollup: bool) -> str:
    return ENGAGEMENT_AGGREGATES[metric] if metric in ENGAGEMENT_METRICS else EVENT_AGGREGATES[metric][rollup]


def _visit_sql(query: StatsQuery, metrics: list[tuple[int, str]], params: _Params) -> str:
    dims = [f"{_dimension_sql(d, 'visit', params, False)} AS d{i}" for i, d in enumerate(query.dimensions)]
    aggs = [f"{VISIT_AGGREGATES[m]} AS m{i}" for i, m in metrics]
    where = SESSIONS_WHERE
    if query.filters is not None:
        where += f"\n  AND {_Compiler(params, 'visit').filter(query.filters)}"
    return _select(dims, aggs, SESSIONS_FROM_EVENTS, where, len(query.dimensions))


def _select(dims: list[str], aggs: list[str], source: str, where: str, groups: int) -> str:
    group = f"\nGROUP BY {', '.join(f'd{i}' for i in range(groups))}" if groups else ""
    return f"SELECT {', '.join(dims + aggs)}\nFROM {source}\nWHERE {where}{group}"


def _order(query: StatsQuery) -> str:
    def column(name: str) -> str:
        if name in query.metrics:
            return f"m{query.metrics.index(name)}"
        return f"d{query.dimensions.index(name)}"

    keys = [f"{column(n)} {d.upper()}" for n, d in query.order_by]
    if not keys:
        times = [f"{column(d)} ASC" for d in query.dimensions if d in TIME_DIMS]
        keys = times or ["m0 DESC"]
    keys += [f"d{i} ASC" for i in range(len(query.dimensions)) if not any(k.startswith(f"d{i} ") for k in keys)]
    return ", ".join(keys)


def plan(query: StatsQuery, source: str | None = None) -> tuple[str, dict, str]:
    """(sql, parameters, source). `source="events"` forces raw rows (to compare with the rollup)."""
    _validate(query)
    table = None if source == "events" else _rollup_for(query)
    params = _Params(
        {
            "workspace_id": query.workspace_id,
            "host": query.host,
            "start": int(query.start.timestamp() * 1000),
            "end": int(query.end.timestamp() * 1000),
            "tz": query.time_zone,
            "limit": query.limit,
            "offset": query.offset,
        }
    )
    numbered = list(enumerate(query.metrics))
    event_metrics = [(i, m) for i, m in numbered if m not in VISIT_METRICS]
    visit_metrics = [(i, m) for i, m in numbered if m in VISIT_METRICS]
    parts = []
    if event_metrics:
        parts.append(_event_sql(query, event_metrics, params, table))
    if visit_metrics:
        parts.append(_visit_sql(query, visit_metrics, params))
    dims = [f"d{i}" for i in range(len(query.dimensions))]
    if len(parts) == 1:
        inner = parts[0]
    elif dims:
        inner = f"SELECT * FROM ({parts[0]}) AS a\nFULL OUTER JOIN ({parts[1]}) AS b USING ({', '.join(dims)})"
    else:
        inner = f"SELECT * FROM ({parts[0]}) AS a\nCROSS JOIN ({parts[1]}) AS b"
    columns = ", ".join(dims + [f"m{i}" for i in range(len(query.metrics))])
    sql = (
        f"SELECT {columns}, count() OVER () AS total_rows\nFROM ({inner})\n"
        f"ORDER BY {_order(query)}\nLIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}"
    )
    return sql, params.values, "events" if table is None else "rollup"


# --- running -------------------------------------------------------------------------------


def run(reader, query: StatsQuery, settings: dict | None = None, source: str | None = None) -> StatsResult:
    """Plan and run `query` on `reader`; `settings` (name → number) are applied to this query only.

    Raises InvalidQuery, Unavailable (ClickHouse unreachable) or QueryFailed (ClickHouse refused it,
    e.g. a limit in `settings` was reached)."""
    sql, params, chosen = plan(query, source)
    if settings:
        for name, value in settings.items():
            if not SETTING_NAME.match(name) or not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"setting {name!r}={value!r}: a name and a number")
        sql += "\nSETTINGS " + ", ".join(f"{name} = {value!r}" for name, value in settings.items())
    try:
        result = reader.query(sql, parameters=params)
    except (OperationalError, OSError) as exc:
        raise Unavailable("ClickHouse", str(exc)) from exc
    except (ClickHouseError, QueryFailed) as exc:
        if BAD_REGEXP in str(exc):
            raise InvalidQuery("a matches filter holds an invalid regular expression (RE2 syntax)") from exc
        if isinstance(exc, QueryFailed):
            raise
        raise QueryFailed(str(exc)) from exc
    dims = len(query.dimensions)
    rows = [([str(v) for v in row[:dims]], _metric_values(query.metrics, row[dims:-1])) for row in result.result_rows]
    total = int(result.result_rows[0][-1]) if result.result_rows else (0 if query.offset == 0 else None)
    return StatsResult(rows, chosen, total)


def _metric_values(metrics: tuple[str, ...], values) -> list:
    out: list = []
    for metric, value in zip(metrics, values, strict=True):
        number = float(value) if value is not None else 0.0
        if number != number:  # NaN: nothing to average
            number = 0.0
        out.append(round(number, DECIMALS[metric]) if metric in DECIMALS else int(round(number)))
    return out
