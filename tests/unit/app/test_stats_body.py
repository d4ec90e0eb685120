"""The Stats API's body: what it accepts, what it refuses by name, and date ranges as days."""

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.http.errors import ValidationFailed
from app.resources import stats_body
from storage.clickhouse import stats

BASE = {"site": "shop.example", "metrics": ["visitors"], "date_range": "7d"}


def errors_of(body: dict) -> dict:
    with pytest.raises(ValidationFailed) as caught:
        stats_body.parse(body)
    return caught.value.extra["errors"]


def test_filters_become_the_planner_s_tree():
    request = stats_body.parse(
        {**BASE, "filters": [["is", "visit:country", ["DE"]], ["not", ["or", [["matches", "event:page", ["^/a"]]]]]]}
    )
    assert request.filters == stats.Combined(
        "and",
        (
            stats.Condition("is", "visit:country", ("DE",)),
            stats.Negated(stats.Combined("or", (stats.Condition("matches", "event:page", ("^/a",)),))),
        ),
    )
    assert stats_body.filter_list(request.filters) == [
        ["is", "visit:country", ["DE"]],
        ["not", ["or", [["matches", "event:page", ["^/a"]]]]],
    ]


def test_unknown_names_are_refused_naming_the_allowed_ones():
    assert "visitors, visits" in errors_of({**BASE, "metrics": ["hits"]})["metrics"][0]
    assert "property:<name>" in errors_of({**BASE, "dimensions": ["visit:planet"]})["dimensions"][0]
    assert "is_not" in errors_of({**BASE, "filters": [["like", "event:page", ["/"]]]})["filters[0]"][0]
    assert "event:goal" in errors_of({**BASE, "filters": [["is", "time:day", ["x"]]]})["filters[0][1]"][0]
    assert "visitors" in errors_of({**BASE, "order_by": [["events", "asc"]]})["order_by[0]"][0]


def test_filters_nest_and_count_within_bounds():
    deep = ["is", "event:page", ["/"]]
    for _ in range(stats_body.FILTER_DEPTH):
        deep = ["not", deep]
    assert "deep" in " ".join(errors_of({**BASE, "filters": [deep]})["filters[0][1][1][1]"])
    many = [["is", "event:page", [str(n)]] for n in range(stats_body.FILTER_CONDITIONS_MAX)]
    assert stats_body.parse({**BASE, "filters": many}).filters is not None
    assert errors_of({**BASE, "filters": [["and", many], ["is", "event:page", ["x"]]]})["filters"]


def test_a_pattern_is_at_most_the_planner_s_length():
    long = "a" * (stats.MAX_PATTERN + 1)
    assert errors_of({**BASE, "filters": [["matches", "event:page", [long]]]})["filters[0][2]"]
    assert stats_body.parse({**BASE, "filters": [["contains", "event:page", [long]]]}).filters


def test_the_site_is_given_once():
    assert (
        stats_body.parse({**{k: v for k, v in BASE.items() if k != "site"}, "site_id": "a.example"}).site == "a.example"
    )
    assert errors_of({**BASE, "site_id": "a.example"})["site"]
    assert errors_of({"metrics": ["visitors"], "date_range": "7d"})["site"]


TODAY = date(2026, 2, 14)


@pytest.mark.parametrize(
    ("named", "days"),
    [
        ("day", (TODAY, TODAY)),
        ("7d", (date(2026, 2, 8), TODAY)),
        ("30d", (date(2026, 1, 16), TODAY)),
        ("month", (date(2026, 2, 1), date(2026, 2, 28))),
        ("year", (date(2026, 1, 1), date(2026, 12, 31))),
        ("all", (date(2025, 6, 1), TODAY)),
    ],
)
def test_named_ranges_are_days_of_the_workspace(named, days):
    assert stats_body.days_of(named, TODAY, date(2025, 6, 1)) == days


def test_days_start_at_the_time_zone_s_midnight():
    request = stats_body.parse({**BASE, "date_range": "day"})
    now = datetime(2026, 2, 14, 20, 0, tzinfo=UTC)  # already the 15th in Tokyo
    query, days = stats_body.to_query(request, 1, "shop.example", "Asia/Tokyo", now, date(2026, 1, 1))
    assert days == (date(2026, 2, 15), date(2026, 2, 15))
    assert (query.start, query.end) == (datetime(2026, 2, 14, 15, tzinfo=UTC), datetime(2026, 2, 15, 15, tzinfo=UTC))


@given(st.dates(date(1970, 1, 1), date(2299, 12, 31)), st.dates(date(1970, 1, 1), date(2299, 12, 31)))
def test_explicit_ranges_are_accepted_in_order_and_refused_otherwise(first, last):
    body = {**BASE, "date_range": [first.isoformat(), last.isoformat()]}
    if first <= last:
        assert stats_body.parse(body).date_range == (first, last)
    else:
        assert "after" in errors_of(body)["date_range"][0]


NOW = datetime(2026, 2, 14, 12, 0, tzinfo=UTC)


def planned(body: dict) -> tuple[str, dict, str]:
    """The planner's (sql, parameters, source) for a body, as the route would run it."""
    query, _ = stats_body.to_query(stats_body.parse({**BASE, **body}), 1, "shop.example", "UTC", NOW, TODAY)
    return stats.plan(query)


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": ["time_on_page", "scroll_depth"]},
        {"metrics": ["pageviews", "time_on_page"], "dimensions": ["event:page"]},
        {"metrics": ["scroll_depth"], "dimensions": ["time:day"], "filters": [["contains", "event:page", ["/blog"]]]},
        {"metrics": ["visits", "time_on_page"], "dimensions": ["visit:country"]},
    ],
)
def test_engagement_metrics_are_read_from_raw_rows(body):
    sql, _, source = planned(body)
    assert source == "events" and "sum(engaged_ms)" in sql


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": ["time_on_page"], "dimensions": ["event:name"]},
        {"metrics": ["events", "scroll_depth"], "filters": [["is", "event:name", ["pageview"]]]},
        {"metrics": ["time_on_page"], "filters": [["not", ["is", "event:goal", ["signup"]]]]},
        {"metrics": ["conversion_rate", "scroll_depth"], "filters": [["is", "event:goal", ["signup"]]]},
    ],
)
def test_engagement_metrics_refuse_what_selects_other_events_than_pageviews(body):
    with pytest.raises(stats.InvalidQuery, match="measured on pageviews"):
        planned(body)


def test_metric_values_are_rounded_as_documented():
    values = stats._metric_values(("time_on_page", "scroll_depth", "bounce_rate", "pageviews"), (18.66, 66.6, 1 / 3, 3))
    assert values == [18.7, 67, 0.33, 3]
    assert isinstance(values[1], int)
