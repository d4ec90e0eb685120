"""The Stats API planner's choices without ClickHouse: which table serves a query, and input only ever
as bind parameters (answers on real rows: tests/integration/storage/clickhouse/test_stats.py)."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.clickhouse import stats
from storage.clickhouse.stats import Combined, Condition, InvalidQuery, Negated, StatsQuery

START, END = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)


def query(metrics=("visitors",), **kwargs) -> StatsQuery:
    base = {"workspace_id": 1, "host": "shop.test", "start": START, "end": END, "time_zone": "UTC"}
    return StatsQuery(metrics=tuple(metrics), **{**base, **kwargs})


def table(q: StatsQuery) -> str:
    sql, _, source = stats.plan(q)
    # Visit scope reads sessions computed from events in a subquery named `sessions`.
    first = re.search(r"FROM (stats_hourly\w*|events AS e)\b|\) AS (sessions)\b", sql)
    assert first is not None, sql
    found = first.group(1) or first.group(2)
    assert (source == "rollup") == found.startswith("stats_hourly")
    return found


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (query(("visitors", "pageviews", "events")), "stats_hourly_sites"),
        (query(dimensions=("time:day",), time_zone="Europe/Berlin"), "stats_hourly_sites"),
        (query(("conversion_rate",), filters=Condition("is", "event:goal", ("signup",))), "stats_hourly_sites"),
        (query(dimensions=("event:name",)), "stats_hourly_sites"),
        (query(dimensions=("event:page",)), "stats_hourly_pages"),
        (query(filters=Condition("contains", "event:page", ("/blog",))), "stats_hourly_pages"),
        (query(dimensions=("visit:country",), filters=Negated(Condition("is", "event:page", ("/",)))), "stats_hourly"),
        (query(dimensions=("visit:city",)), "events AS e"),
        (query(dimensions=("visit:source",)), "events AS e"),
        (query(filters=Condition("is", "property:plan", ("pro",))), "events AS e"),
        (query(dimensions=("time:day",), time_zone="Asia/Kolkata"), "events AS e"),
        (query(time_zone="Asia/Kolkata"), "stats_hourly_sites"),  # no time buckets: the zone does not matter
        (query(start=START + timedelta(minutes=30)), "events AS e"),
        (query(("visits",)), "sessions"),
    ],
)
def test_the_narrowest_table_that_can_answer_is_read(q, expected):
    assert table(q) == expected


def test_a_zone_that_moves_to_a_half_hour_offset_within_the_range_reads_raw_rows():
    # Lord Howe Island: +10:30 in winter, +11 in summer (from the first Sunday of October).
    summer = query(
        dimensions=("time:day",),
        time_zone="Australia/Lord_Howe",
        start=datetime(2026, 11, 1, tzinfo=UTC),
        end=datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert stats.plan(summer)[2] == "rollup"
    across = query(
        dimensions=("time:day",),
        time_zone="Australia/Lord_Howe",
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=datetime(2026, 5, 1, tzinfo=UTC),
    )
    assert stats.plan(across)[2] == "events"


def test_raw_rows_can_be_asked_for():
    assert stats.plan(query(), source="events")[2] == "events"


def test_visits_and_visitors_together_join_on_the_dimensions():
    sql, _, _ = stats.plan(query(("visitors", "visits"), dimensions=("visit:country",)))
    assert "FULL OUTER JOIN" in sql and "USING (d0)" in sql


@pytest.mark.parametrize(
    "bad",
    [
        query(("conversion_rate",), filters=Negated(Condition("is", "event:goal", ("signup",)))),
        query(("visit_duration",), dimensions=("event:name",)),
        query(filters=Condition("is_not", "event:goal", ("signup",))),
        query(filters=Condition("matches", "event:page", ("x" * (stats.MAX_PATTERN + 1),))),
        query(filters=Condition("is", "event:page", tuple("x" * (stats.MAX_VALUES + 1)))),
        query(filters=Combined("and", tuple(Condition("is", "event:page", ("/",)) for _ in range(51)))),
        query(dimensions=("property:",)),
        query(workspace_id=0),
        query(start=START.replace(tzinfo=None)),
        query(offset=-1),
        query(dimensions=("time:day", "time:day")),
    ],
)
def test_queries_it_cannot_serve_are_invalid(bad):
    with pytest.raises(InvalidQuery):
        stats.plan(bad)


def shaped(host: str, value: str, name: str) -> StatsQuery:
    return query(
        ("visitors", "visits"),
        host=host,
        dimensions=("visit:country",),
        filters=Combined(
            "or",
            (
                Condition("contains", "visit:source", (value,)),
                Condition("matches", f"property:{name}", (value[:256],)),
                Condition("is", "event:page", (value,)),
            ),
        ),
    )


@given(host=st.text(min_size=1), value=st.text(min_size=1), name=st.text(min_size=1, max_size=300))
def test_input_reaches_clickhouse_only_as_parameters(host, value, name):
    sql, params, _ = stats.plan(shaped(host, value, name))
    assert sql == stats.plan(shaped("h", "v", "n"))[0]  # the text is the same whatever the input
    assert host in params.values() and name in params.values() and [value] in params.values()
