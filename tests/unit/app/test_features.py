"""The feature catalogue's invariants and its billing-period and percentage arithmetic."""

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from app.resources.features import (
    AMOUNT_MAX,
    FEATURES,
    GIB,
    METERED,
    STOCK,
    billing_period,
    limit_for,
    limit_message,
    percentage,
)
from app.resources.workspaces import TIERS


def test_every_feature_has_a_limit_for_every_tier_and_nothing_else():
    for feature in FEATURES.values():
        assert tuple(feature.limits) == TIERS, feature.key


def test_limits_are_positive_and_grow_with_the_tier():
    for feature in FEATURES.values():
        limits = [feature.limits[tier] for tier in TIERS]
        assert all(0 < limit <= AMOUNT_MAX for limit in limits), feature.key
        assert limits == sorted(set(limits)), f"{feature.key}: {limits} does not grow strictly"


def test_the_issue_s_features_have_their_kinds_and_units():
    kinds = {key: f.kind for key, f in FEATURES.items()}
    assert kinds == {"posts": STOCK, "api_calls": METERED, "storage": STOCK, "webhooks": STOCK, "seo_reports": METERED}
    assert FEATURES["storage"].unit == "bytes"
    assert all(f.unit is None for key, f in FEATURES.items() if key != "storage")


def test_pro_limits_match_the_spec_examples():
    assert FEATURES["posts"].limits["pro"] == 1000
    assert FEATURES["api_calls"].limits["pro"] == 10_000
    assert FEATURES["storage"].limits["pro"] == 5 * GIB == 5_368_709_120


def test_override_replaces_the_tier_limit_of_its_feature_only():
    posts, storage = FEATURES["posts"], FEATURES["storage"]
    assert limit_for(posts, "free", {"posts": 500}) == 500
    assert limit_for(posts, "free", {"posts": 0}) == 0
    assert limit_for(storage, "free", {"posts": 500}) == storage.limits["free"]


def test_limit_message_is_the_spec_s():
    assert limit_message(FEATURES["posts"], 100, 100) == "Post limit exceeded. Used: 100, Limit: 100"


def test_billing_period_is_the_utc_calendar_month():
    assert billing_period(datetime(2026, 11, 15, 12, tzinfo=UTC)) == ("2026-11", datetime(2026, 12, 1, tzinfo=UTC))
    assert billing_period(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == (
        "2026-12",
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    # 00:30 on 1 March in UTC+2 is still February in UTC.
    plus_two = timezone(timedelta(hours=2))
    assert billing_period(datetime(2026, 3, 1, 0, 30, tzinfo=plus_two))[0] == "2026-02"


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_reset_is_the_first_instant_after_the_period(now):
    label, reset_at = billing_period(now)
    assert now < reset_at <= now + timedelta(days=31)
    assert reset_at.day == 1 and reset_at.time().isoformat() == "00:00:00"
    assert label == now.strftime("%Y-%m") != billing_period(reset_at)[0]


def test_percentage_has_two_decimals_and_whole_numbers_as_ints():
    assert percentage(45, 1000) == 4.5
    assert percentage(5001, 10_000) == 50.01
    assert percentage(1_073_741_824, 5_368_709_120) == 20 and isinstance(percentage(1, 5), int)
    assert percentage(1, 3) == 33.33
    assert percentage(0, 10) == 0
    assert percentage(0, 0) == 100  # a limit of 0: nothing available
    assert percentage(15, 10) == 150  # an override lowered below what is held
