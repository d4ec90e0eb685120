"""Counter arithmetic of app/cli/counters.py: billing period bounds, drift's sign, the printed table."""

from datetime import UTC, datetime

from app.cli.counters import Count, period_bounds, table


def test_period_bounds_span_the_calendar_month_across_a_year_end():
    label, start, end = period_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert (label, start, end) == ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def test_drift_is_redis_minus_the_record_and_a_missing_counter_counts_as_zero():
    assert Count(1, "posts", "k", 0, source=7, redis=None).drift == -7
    assert Count(1, "api_calls", "k", 1, source=2, redis=5).drift == 3


def test_table_marks_a_missing_counter_and_signs_the_drift():
    lines = table([Count(12, "posts", "k", 0, source=7, redis=None)]).splitlines()
    assert lines[0].split() == ["workspace", "feature", "redis", "source", "drift"]
    assert lines[1].split() == ["12", "posts", "-", "7", "-7"]
