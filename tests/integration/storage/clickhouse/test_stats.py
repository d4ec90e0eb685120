"""The Stats API's planner against real ClickHouse (chdb): exact answers on known rows, the rollup
answering as the raw rows do, and no other workspace's or site's rows ever counted.

The chdb directory is held by a child process that seeds it and then serves it through ClickHouse's
HTTP interface, as the ingest worker does: chdb opens one directory per process, and other tests open theirs.
"""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.clickhouse import stats
from storage.clickhouse.client import worker_reader
from storage.clickhouse.stats import Combined, Condition, InvalidQuery, Negated, StatsQuery

ROOT = Path(__file__).resolve().parents[4]
WS, OTHER_WS, HOST, OTHER_HOST = 7001, 7002, "shop.test", "other.test"
START, END = datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 12, tzinfo=UTC)
COLUMNS = (
    "workspace_id host session_id visitor_id time event path referrer referrer_source channel utm_source "
    "country region city device browser browser_version os os_version is_bot properties"
).split()
GOOGLE = ("https://google.com/", "Google", "Organic Search", "news")
FACEBOOK = ("https://facebook.com/", "Facebook", "Organic Social", "")
DIRECT = ("", "", "Direct", "")
DE = ("DE", "DE-BE", "Berlin", "desktop", "Chrome", "120.0", "Windows", "10")
US = ("US", "US-CA", "San Jose", "mobile", "Mobile Safari", "17.4", "iOS", "17.4")
FR = ("FR", "FR-IDF", "Paris", "desktop", "Firefox", "130.0", "Linux", "")
BOT = ("US", "", "", "bot", "Googlebot", "2.1", "Other", "")


def row(ws, host, session, visitor, time, event, path, came, where, bot=False, props="{}"):
    return (ws, host, session, visitor, time, event, path, *came, *where, bot, props)


# Four visits of three visitors on shop.test, a bot, and one row each of another workspace and site.
ROWS = [
    # v1's first visit: from Google, two pages and a signup (4 min); the later events come from inside.
    row(WS, HOST, 101, "v1", "2026-11-10 10:05:00", "pageview", "/", GOOGLE, DE),
    row(WS, HOST, 101, "v1", "2026-11-10 10:07:00", "pageview", "/pricing", DIRECT, DE),
    row(WS, HOST, 101, "v1", "2026-11-10 10:09:00", "signup", "/pricing", DIRECT, DE, props='{"plan":"pro","seats":3}'),
    # v2: one page, a bounce.
    row(WS, HOST, 102, "v2", "2026-11-10 10:30:00", "pageview", "/pricing", DIRECT, US),
    # v1 again from Facebook, across UTC midnight (20 min); 05:20/05:40 on the 11th in Kolkata.
    row(WS, HOST, 103, "v1", "2026-11-10 23:50:00", "pageview", "/blog", FACEBOOK, DE),
    row(WS, HOST, 103, "v1", "2026-11-11 00:10:00", "pageview", "/", DIRECT, DE),
    # v3: a page and an engagement event (still a bounce), 1 min.
    row(WS, HOST, 104, "v3", "2026-11-11 12:00:00", "pageview", "/", DIRECT, FR),
    row(WS, HOST, 104, "v3", "2026-11-11 12:01:00", "engagement", "/", DIRECT, FR),
    row(WS, HOST, 105, "bot", "2026-11-10 11:00:00", "pageview", "/", DIRECT, BOT, bot=True),
    row(WS, HOST, 106, "bot", "2026-11-10 11:01:00", "signup", "/pricing", DIRECT, BOT, bot=True),
    row(OTHER_WS, HOST, 201, "w1", "2026-11-10 10:00:00", "pageview", "/", DIRECT, DE),
    row(WS, OTHER_HOST, 301, "v9", "2026-11-10 10:00:00", "pageview", "/", DIRECT, DE),
    # Outside the range.
    row(WS, HOST, 107, "v4", "2026-11-12 00:00:00", "pageview", "/", DIRECT, DE),
]

# Engagement (another workspace's rows, so the site's figures above stay as they are): e1 reads / for
# 42 s (two engagement events) down to 80 %, then /pricing for 5 s to the end; e2 reads / for 9 s, 20 %,
# until after the range's end; e3's pageview was never measured; e4's pageview came before the range.
ENGAGED_WS = 7003


def viewed(session, visitor, time, path, where, pageview_id):
    props = json.dumps({"title": path, "pageview_id": pageview_id})
    return row(ENGAGED_WS, HOST, session, visitor, time, "pageview", path, DIRECT, where, props=props)


def engaged(session, visitor, time, path, where, pageview_id, ms, depth):
    props = json.dumps({"pageview_id": pageview_id, "engaged_ms": ms, "scroll_depth": depth})
    return row(ENGAGED_WS, HOST, session, visitor, time, "engagement", path, DIRECT, where, props=props)


ENGAGED_ROWS = [
    viewed(401, "e1", "2026-11-10 10:00:00", "/", DE, "a1"),
    engaged(401, "e1", "2026-11-10 10:00:30", "/", DE, "a1", 30_000, 40),
    engaged(401, "e1", "2026-11-10 10:05:00", "/", DE, "a1", 12_000, 80),
    viewed(401, "e1", "2026-11-10 10:10:00", "/pricing", DE, "b1"),
    engaged(401, "e1", "2026-11-10 10:11:00", "/pricing", DE, "b1", 5_000, 100),
    viewed(402, "e2", "2026-11-11 23:50:00", "/", US, "c1"),
    engaged(402, "e2", "2026-11-12 00:20:00", "/", US, "c1", 9_000, 20),
    viewed(403, "e3", "2026-11-11 12:00:00", "/", FR, "d1"),
    engaged(403, "e3", "2026-11-11 12:01:00", "/", FR, "", 99_000, 99),  # no pageview's
    viewed(400, "e4", "2026-11-09 23:00:00", "/", FR, "z1"),
    engaged(400, "e4", "2026-11-10 00:10:00", "/", FR, "z1", 60_000, 90),
]

SERVER = """
import asyncio, json, sys
from storage.clickhouse import client as ch
from storage.clickhouse.http_interface import HttpInterface, Settings

directory = sys.argv[1]
client = ch.connect("chdb://" + directory)
ch.apply_schema(client)
for statement in json.loads(sys.stdin.readline()):
    client.command(statement)

async def main():
    interface = HttpInterface(directory, Settings("127.0.0.1", 0))
    await interface.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin
    await interface.close()

asyncio.run(main())
"""


def _literal(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def insert_statement(rows) -> str:
    values = ",\n".join("(" + ", ".join(map(_literal, r)) + ")" for r in rows)
    extra = "event_id, received_at, url, _topic, _partition, _offset"
    return (
        f"INSERT INTO events ({', '.join(COLUMNS)}, {extra}) "
        f"SELECT *, generateUUIDv7(rowNumberInAllBlocks()), time, concat('https://', host, path), 'pixel', 0, "
        f"rowNumberInAllBlocks() FROM values('{_structure()}', {values})"
    )


def _structure() -> str:
    types = {"workspace_id": "UInt64", "session_id": "UInt64", "time": "DateTime64(3, 'UTC')", "is_bot": "Bool"}
    return ", ".join(f"{c} {types.get(c, 'String')}" for c in COLUMNS).replace("'", "\\'")


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stats") / "ch"
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(directory)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps([insert_statement(ROWS + ENGAGED_ROWS)]) + "\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "ready"
    yield worker_reader("chdb://" + str(directory))
    child.stdin.close()
    child.wait(timeout=60)


def query(metrics, **kwargs) -> StatsQuery:
    base = {"workspace_id": WS, "host": HOST, "start": START, "end": END, "time_zone": "UTC"}
    return StatsQuery(metrics=tuple(metrics), **{**base, **kwargs})


def rows(reader, q: StatsQuery, source: str | None = None) -> list[tuple]:
    result = stats.run(reader, q, {"max_execution_time": 60}, source=source)
    return [(*dims, *values) for dims, values in result.results]


ALL = ("visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit")


def test_every_metric_over_the_site_counts_people_not_bots_nor_other_sites(reader):
    # 7 events: v3's engagement is a measurement of its pageview, not an event (v3 still bounced).
    assert rows(reader, query(ALL)) == [(3, 4, 6, 7, 50.0, 375.0, 1.5)]


def test_other_workspace_and_other_host_see_only_their_own_rows(reader):
    assert rows(reader, query(("visitors", "pageviews"), workspace_id=OTHER_WS)) == [(1, 1)]
    assert rows(reader, query(("visitors", "pageviews"), host=OTHER_HOST)) == [(1, 1)]
    assert rows(reader, query(("visitors",), workspace_id=9999)) == [(0,)]


def test_pages_break_down_events_and_are_served_from_the_rollup(reader):
    q = query(("visitors", "pageviews", "events"), dimensions=("event:page",))
    result = stats.run(reader, q)
    assert result.source == "rollup" and result.total_rows == 3
    expected = [("/", 2, 3, 3), ("/pricing", 2, 2, 3), ("/blog", 1, 1, 1)]
    assert rows(reader, q) == rows(reader, q, source="events") == expected


def test_event_names_break_down(reader):
    q = query(("visitors", "events"), dimensions=("event:name",))
    assert rows(reader, q) == [("pageview", 3, 6), ("signup", 1, 1)]  # engagement is no event


def test_source_is_the_visits_first_event_for_events_and_visits_alike(reader):
    q = query(("visitors", "pageviews", "events", "visits", "bounce_rate"), dimensions=("visit:source",))
    assert stats.plan(q)[2] == "events"
    assert rows(reader, q) == [("", 2, 2, 2, 2, 100.0), ("Facebook", 1, 2, 2, 1, 0.0), ("Google", 1, 2, 3, 1, 0.0)]


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        ("visit:channel", [("Direct", 2), ("Organic Search", 1), ("Organic Social", 1)]),
        ("visit:referrer", [("", 2), ("https://facebook.com/", 1), ("https://google.com/", 1)]),
        ("visit:utm_source", [("", 3), ("news", 1)]),
        ("visit:entry_page", [("/", 2), ("/blog", 1), ("/pricing", 1)]),
        ("visit:exit_page", [("/", 2), ("/pricing", 2)]),
        ("visit:country", [("DE", 2), ("FR", 1), ("US", 1)]),
        ("visit:region", [("DE-BE", 2), ("FR-IDF", 1), ("US-CA", 1)]),
        ("visit:city", [("Berlin", 2), ("Paris", 1), ("San Jose", 1)]),
        ("visit:device", [("desktop", 3), ("mobile", 1)]),
        ("visit:browser", [("Chrome", 2), ("Firefox", 1), ("Mobile Safari", 1)]),
        ("visit:browser_version", [("120.0", 2), ("130.0", 1), ("17.4", 1)]),
        ("visit:os", [("Windows", 2), ("Linux", 1), ("iOS", 1)]),
        ("visit:os_version", [("10", 2), ("", 1), ("17.4", 1)]),
        ("event:hostname", [(HOST, 4)]),
        ("visit:utm_medium", [("", 4)]),
    ],
)
def test_each_visit_dimension_counts_visits_by_the_first_events_value(reader, dimension, expected):
    assert rows(reader, query(("visits",), dimensions=(dimension,))) == expected


def test_device_like_dimensions_count_events_from_the_rollup_as_from_raw_rows(reader):
    q = query(("visitors", "pageviews"), dimensions=("visit:country", "visit:device"))
    assert stats.plan(q)[2] == "rollup"
    assert (
        rows(reader, q)
        == rows(reader, q, "events")
        == [("DE", "desktop", 1, 4), ("FR", "desktop", 1, 1), ("US", "mobile", 1, 1)]
    )


def test_days_follow_the_time_zone_and_a_half_hour_zone_reads_raw_rows(reader):
    utc = query(("visitors", "pageviews", "events", "visits"), dimensions=("time:day",))
    assert stats.plan(utc)[2] == "events"  # visits
    assert rows(reader, utc) == [("2026-11-10", 2, 4, 5, 3), ("2026-11-11", 2, 2, 2, 1)]
    kolkata = query(("visitors", "pageviews", "events", "visits"), dimensions=("time:day",), time_zone="Asia/Kolkata")
    assert rows(reader, kolkata) == [("2026-11-10", 2, 3, 4, 2), ("2026-11-11", 2, 3, 3, 2)]
    hours = query(("events",), dimensions=("time:hour",), time_zone="Asia/Kolkata")
    assert stats.plan(hours)[2] == "events"
    assert rows(reader, hours) == [
        ("2026-11-10 15:00:00", 3),
        ("2026-11-10 16:00:00", 1),
        ("2026-11-11 05:00:00", 2),
        ("2026-11-11 17:00:00", 1),
    ]
    berlin = query(("events",), dimensions=("time:hour",), time_zone="Europe/Berlin")
    assert stats.plan(berlin)[2] == "rollup"
    assert rows(reader, berlin)[0] == ("2026-11-10 11:00:00", 4)  # 10:05, 10:07, 10:09, 10:30 UTC


def test_weeks_start_on_monday_and_months_on_the_first(reader):
    q = query(("visitors", "visits"), dimensions=("time:week", "time:month"))
    assert rows(reader, q) == [("2026-11-09", "2026-11-01", 3, 4)]


def test_a_range_not_on_whole_hours_reads_raw_rows(reader):
    q = query(("pageviews",), start=START + timedelta(hours=10, minutes=6))
    assert stats.plan(q)[2] == "events"
    assert rows(reader, q) == [(5,)]  # 10:07, 10:30, 23:50, 00:10, 12:00


def test_conversion_rate_is_the_share_of_visitors_who_reached_the_goal(reader):
    goal = Condition("is", "event:goal", ("signup",))
    q = query(("visitors", "events", "conversion_rate"), filters=goal)
    assert stats.plan(q)[2] == "rollup"
    assert rows(reader, q) == rows(reader, q, "events") == [(1, 1, 33.33)]
    by_country = query(("conversion_rate",), filters=Combined("and", (goal,)), dimensions=("visit:country",))
    assert rows(reader, by_country) == [("DE", 100.0), ("FR", 0.0), ("US", 0.0)]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Condition("is", "visit:country", ("DE", "FR")), (2, 5)),
        (Condition("is_not", "visit:country", ("DE",)), (2, 2)),
        (Condition("contains", "event:page", ("ric",)), (2, 2)),
        (Condition("contains_not", "event:page", ("ric", "log")), (2, 3)),
        (Condition("matches", "event:page", ("^/b", "^/p.*g$")), (2, 3)),
        (Condition("matches_not", "event:page", ("^/$",)), (2, 3)),
        (Condition("is", "visit:source", ("Google",)), (1, 2)),
        (Condition("is", "property:plan", ("pro",)), (1, 0)),
        (Condition("is", "property:seats", ("3",)), (1, 0)),
        (
            Combined("or", (Condition("is", "visit:country", ("US",)), Condition("is", "event:page", ("/blog",)))),
            (2, 2),
        ),
        (Combined("and", (Condition("is", "visit:country", ("DE",)), Condition("is", "event:page", ("/",)))), (1, 2)),
        (Negated(Condition("is", "event:name", ("pageview",))), (1, 0)),  # v1's signup (engagement is none)
        (
            Negated(
                Combined("or", (Condition("is", "visit:device", ("mobile",)), Condition("is", "event:page", ("/",))))
            ),
            (1, 2),
        ),
    ],
)
def test_filters_select_events_and_the_rollup_agrees(reader, filters, expected):
    q = query(("visitors", "pageviews"), filters=filters)
    assert rows(reader, q) == rows(reader, q, "events") == [expected]


@pytest.mark.parametrize(
    ("filters", "visits"),
    [
        (Condition("is", "event:page", ("/blog",)), 1),
        (Condition("is_not", "event:page", ("/pricing",)), 2),  # visits with no /pricing event
        (Condition("is", "event:goal", ("signup",)), 1),
        (Condition("is", "visit:entry_page", ("/pricing",)), 1),
        (Combined("or", (Condition("is", "visit:country", ("FR",)), Condition("is", "property:plan", ("pro",)))), 2),
    ],
)
def test_event_filters_select_the_visits_that_hold_such_an_event(reader, filters, visits):
    assert rows(reader, query(("visits",), filters=filters)) == [(visits,)]


def test_order_limit_and_offset_page_through_rows_with_the_total(reader):
    q = query(("pageviews",), dimensions=("event:page",), order_by=(("pageviews", "asc"),), limit=1, offset=1)
    result = stats.run(reader, q)
    assert result.results == [(["/pricing"], [2])] and result.total_rows == 3
    by_name = query(("pageviews",), dimensions=("event:page",), order_by=(("event:page", "desc"),), limit=2)
    assert rows(reader, by_name) == [("/pricing", 2), ("/blog", 1)]


@pytest.mark.parametrize(
    ("dimensions", "time_zone", "expected"),
    [
        ((), "UTC", [(4, 18.7, 67)]),  # (42 + 5 + 9) / 3 s; (80 + 100 + 20) / 3 %
        (("event:page",), "UTC", [("/", 3, 25.5, 50), ("/pricing", 1, 5.0, 100)]),
        (("time:day",), "UTC", [("2026-11-10", 2, 23.5, 90), ("2026-11-11", 2, 9.0, 20)]),
        # A pageview's bucket is its own time's: e2's 23:50 UTC is the 12th in Kolkata.
        (
            ("time:day",),
            "Asia/Kolkata",
            [("2026-11-10", 2, 23.5, 90), ("2026-11-11", 1, 0.0, 0), ("2026-11-12", 1, 9.0, 20)],
        ),
        (("visit:country",), "UTC", [("DE", 2, 23.5, 90), ("FR", 1, 0.0, 0), ("US", 1, 9.0, 20)]),
    ],
)
def test_time_on_page_and_scroll_depth_average_the_measured_pageviews(reader, dimensions, time_zone, expected):
    q = query(
        ("pageviews", "time_on_page", "scroll_depth"),
        workspace_id=ENGAGED_WS,
        dimensions=dimensions,
        time_zone=time_zone,
    )
    assert stats.plan(q)[2] == "events"
    assert rows(reader, q) == expected


def test_engagement_metrics_follow_page_filters_and_sit_beside_visit_metrics(reader):
    page = query(
        ("time_on_page", "scroll_depth"), workspace_id=ENGAGED_WS, filters=Condition("is", "event:page", ("/",))
    )
    assert rows(reader, page) == [(25.5, 50)]
    q = query(("visits", "time_on_page"), workspace_id=ENGAGED_WS, dimensions=("visit:country",))
    assert rows(reader, q) == [("DE", 1, 23.5), ("FR", 1, 0.0), ("US", 1, 9.0)]
    assert rows(reader, query(("time_on_page", "scroll_depth"))) == [(0.0, 0)]  # no engagement measured


@pytest.mark.parametrize(
    "bad",
    [
        query(("time_on_page",), dimensions=("event:name",)),
        query(("scroll_depth",), filters=Negated(Condition("is", "event:goal", ("signup",)))),
        query(("conversion_rate",)),
        query(("visits",), dimensions=("event:page",)),
        query(("bounce_rate",), dimensions=("property:plan",)),
        query(("visitors",), filters=Condition("matches", "event:page", ("a" * 257,))),
        query(("visitors",), filters=Condition("is", "visit:nowhere", ("a",))),
        query(("visitors",), filters=Condition("is", "event:page", ())),
        query(("visitors",), filters=Combined("or", ())),
        query(("visitors",), time_zone="Mars/Olympus"),
        query(("visitors",), start=END, end=START),
        query(("visitors",), limit=stats.MAX_LIMIT + 1),
        query(("visitors",), order_by=(("visits", "desc"),)),
        query(("nothing",)),
    ],
)
def test_queries_the_planner_cannot_serve_are_refused(reader, bad):
    with pytest.raises(InvalidQuery):
        stats.run(reader, bad)


def test_an_invalid_regular_expression_is_the_callers_mistake(reader):
    with pytest.raises(InvalidQuery, match="regular expression"):
        stats.run(reader, query(("visitors",), filters=Condition("matches", "event:page", ("((",))))


def test_input_never_reaches_the_sql_text():
    hostile = "x'; DROP TABLE events; --"
    q = query(("visitors", "visits"), host=hostile, filters=Condition("contains", f"property:{hostile}", (hostile,)))
    sql, params, _ = stats.plan(q)
    assert hostile not in sql and hostile in params.values()


# --- properties: random queries -------------------------------------------------------------

ROLLUP_DIMS = ("event:name", "event:page", "visit:country", "visit:device", "visit:browser", "visit:os")
VALUES = ("/", "/pricing", "/blog", "pageview", "signup", "DE", "US", "desktop", "Chrome", "Windows", "x", "")


def conditions(dimensions):
    return st.builds(
        Condition,
        st.sampled_from(stats.OPERATORS),
        st.sampled_from(dimensions),
        st.lists(st.sampled_from(VALUES + ("^/", "p.*g", "[")), min_size=1, max_size=3).map(tuple),
    )


def filter_trees(dimensions):
    return st.recursive(
        conditions(dimensions),
        lambda inner: (
            st.builds(Combined, st.sampled_from(("and", "or")), st.lists(inner, min_size=1, max_size=3).map(tuple))
            | st.builds(Negated, inner)
        ),
        max_leaves=5,
    )


ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")


@st.composite
def rollup_queries(draw):
    dims = draw(st.lists(st.sampled_from(ROLLUP_DIMS + tuple(stats.TIME_DIMS)), max_size=2, unique=True))
    metrics = draw(st.lists(st.sampled_from(("visitors", "pageviews", "events")), min_size=1, max_size=3, unique=True))
    filters = draw(st.none() | filter_trees(ROLLUP_DIMS))
    if draw(st.booleans()):
        metrics.append("conversion_rate")
        goal = Condition("is", "event:goal", (draw(st.sampled_from(("signup", "pageview"))),))
        filters = goal if filters is None else Combined("and", (goal, filters))
    hours = draw(st.integers(0, 30))
    return query(
        tuple(metrics),
        dimensions=tuple(dims),
        filters=filters,
        time_zone=draw(st.sampled_from(ZONES)),
        start=START + timedelta(hours=hours),
        end=START + timedelta(hours=draw(st.integers(hours + 1, 48))),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=rollup_queries())
def test_the_rollup_answers_as_the_raw_rows_do(reader, q):
    try:
        served = stats.run(reader, q)
    except InvalidQuery as refused:
        assert "regular expression" in str(refused)
        return
    raw = stats.run(reader, q, source="events")
    assert served.results == raw.results and served.total_rows == raw.total_rows


@st.composite
def any_queries(draw):
    dims = draw(st.lists(st.sampled_from(stats.DIMENSIONS + ("property:plan",)), max_size=3, unique=True))
    metrics = draw(st.lists(st.sampled_from(stats.METRICS), min_size=1, max_size=4, unique=True))
    names = dims + metrics
    order = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(("asc", "desc"))), max_size=2))
    return query(
        tuple(metrics),
        dimensions=tuple(dims),
        filters=draw(st.none() | filter_trees(stats.FILTER_DIMENSIONS + ("property:plan",))),
        order_by=tuple(order),
        time_zone=draw(st.sampled_from(ZONES)),
        limit=draw(st.integers(1, 5)),
        offset=draw(st.integers(0, 3)),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=any_queries())
def test_random_valid_queries_answer_or_are_refused_as_invalid(reader, q):
    try:
        result = stats.run(reader, q)
    except InvalidQuery:
        return
    assert len(result.results) <= q.limit
    for dims, values in result.results:
        assert len(dims) == len(q.dimensions) and len(values) == len(q.metrics)
        assert all(isinstance(v, str) for v in dims) and all(isinstance(v, int | float) for v in values)
