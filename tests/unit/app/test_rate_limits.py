"""The one rate-limit model: headers and 429 bodies from a decision, and the local limiter's decisions."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.access.rate_limits import TIERS, LimitMode, LocalLimiter, rate_limit_headers, rate_limited, tier_limits
from storage.redis.rate_limit import Decision

START = 1_000_000_000_000
MINUTE_MICROS = 60_000_000


def as_dict(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode().lower(): value.decode() for name, value in headers}


def test_headers_state_the_capacity_and_the_seconds_to_refill_it():
    windows = {"free": 60, "starter": 72, "pro": 78, "agency": 90, "enterprise": 120}
    for tier, window in windows.items():
        limit, capacity = tier_limits(tier)
        headers = as_dict(rate_limit_headers(Decision(True, limit, capacity, capacity - 1, 0.5, 0.0), tier))
        assert headers["x-ratelimit-limit"] == str(capacity)
        assert headers["x-ratelimit-remaining"] == str(capacity - 1)
        assert headers["ratelimit-policy"] == f'"{tier}";q={capacity};w={window}'
        assert headers["ratelimit"] == f'"{tier}";r={capacity - 1};t=1'
        assert "retry-after" not in headers and "x-ratelimit-mode" not in headers


def test_a_refusal_s_body_and_headers_state_the_same_limit():
    decision = Decision(False, 5_000, 6_500, 0, 77.99, 0.011)
    headers = as_dict(rate_limit_headers(decision, "pro", LimitMode.LOCAL))
    body = rate_limited(decision).body()
    assert body["limit"] == int(headers["x-ratelimit-limit"]) == 6_500
    assert body["remaining"] == int(headers["x-ratelimit-remaining"]) == 0
    assert body["retry_after"] == int(headers["retry-after"]) == 1
    assert headers["x-ratelimit-mode"] == "local"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["reset_at"])


@given(
    tier=st.sampled_from(sorted(TIERS)),
    share=st.integers(1, 8),
    gaps=st.lists(st.integers(0, 200_000), min_size=1, max_size=400),
)
def test_local_decisions_follow_the_model(tier, share, gaps):
    """Remaining never exceeds the share's capacity; while no time passes, the bucket's use is the
    count of requests admitted; a refusal has nothing left and a time to wait."""
    limiter, now = LocalLimiter(share), START
    limit, capacity = tier_limits(tier)
    admitted_at_start = 0
    for gap in gaps:
        if gap:
            admitted_at_start = None  # time passed: some of the bucket refilled
        now += gap
        decision = limiter.allow("k", limit, capacity, now_micros=now)
        assert decision.capacity == max(1, capacity // share) and decision.limit == max(1, limit // share)
        assert 0 <= decision.remaining < decision.capacity or not decision.allowed
        if decision.allowed:
            if admitted_at_start is not None:
                admitted_at_start += 1
                assert decision.capacity - decision.remaining == admitted_at_start
        else:
            assert decision.remaining == 0 and decision.retry_after > 0
            if admitted_at_start is not None:
                assert admitted_at_start == decision.capacity
        assert decision.reset_after <= decision.capacity * 60 / decision.limit


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("tier", sorted(TIERS))
def test_a_process_without_redis_empties_its_share_then_refills_its_share_a_minute(tier, workers):
    """README: while Redis is away each of SLUICE_WORKERS processes limits at a bucket of
    capacity / SLUICE_WORKERS refilling at limit / SLUICE_WORKERS, so together they hold the bucket."""
    limit, capacity = tier_limits(tier)
    rate, held = limit // workers, capacity // workers
    limiter = LocalLimiter(workers)
    emptied = [limiter.allow("k", limit, capacity, now_micros=START) for _ in range(held + 1)]
    assert sum(d.allowed for d in emptied) == held and not emptied[-1].allowed
    assert [d.remaining for d in emptied[:-1]] == list(range(held - 1, -1, -1))
    minute_later = [limiter.allow("k", limit, capacity, now_micros=START + MINUTE_MICROS) for _ in range(rate + 1)]
    assert sum(d.allowed for d in minute_later) == rate and not minute_later[-1].allowed
