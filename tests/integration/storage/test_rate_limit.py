"""The GCRA script in a real Redis against a reference token bucket, and every tier's bucket emptied
and refilled at a fixed clock (under concurrency and Redis' own clock: test_rate_limit_concurrency.py)."""

import asyncio
import math
import os
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.access.rate_limits import TIERS, tier_limits
from storage.redis.client import create_client
from storage.redis.rate_limit import MICROS, Decision, RateLimiter, decision_from, interval_micros, limiter_key

START = 1_800_000_000 * 1_000_000  # an arbitrary instant in microseconds
# README's "Rate limits" table, written out: tier → (requests/minute, burst %, bucket holds).
README_TIERS = {
    "free": (60, 0, 60),
    "starter": (1_000, 20, 1_200),
    "pro": (5_000, 30, 6_500),
    "agency": (20_000, 50, 30_000),
    "enterprise": (100_000, 100, 200_000),
}
# A bucket's key expires in Redis' REAL time when the fixed clock says it is full again: a few ms
# after the first request of an emptying. Requests at one fixed instant therefore go in one
# MULTI/EXEC (Redis judges expiry by the transaction's start) until the key lives this long.
KEY_LIFE_MICROS = 10 * MICROS
ROUND = 5_000  # requests in flight at once after that (one pipelined write, storage/redis/scripts.py)


class TokenBucket:
    """Reference model: credit in microseconds, capped at capacity × interval, one interval per request."""

    def __init__(self, limit: int, capacity: int):
        self.interval = interval_micros(limit)
        self.cap = capacity * self.interval
        self.credit = self.cap
        self.last: int | None = None

    def allow(self, now: int) -> bool:
        if self.last is not None:
            self.credit = min(self.cap, self.credit + (now - self.last))
        self.last = now
        if self.credit >= self.interval:
            self.credit -= self.interval
            return True
        return False


@pytest.fixture
async def limiter():
    client = create_client(os.environ["REDIS_URL"])
    yield RateLimiter(client)
    await client.aclose()


def test_tier_table_is_readme_s():
    assert TIERS == {tier: (rate, burst) for tier, (rate, burst, _) in README_TIERS.items()}
    assert {t: tier_limits(t) for t in TIERS} == {tier: (rate, held) for tier, (rate, _, held) in README_TIERS.items()}


async def at_instant(limiter: RateLimiter, key: str, limit: int, capacity: int, now: int, count: int) -> list[Decision]:
    """`count` requests against one bucket, every one at the fixed instant `now`, in order."""
    sha = await limiter.script.client.script_load(limiter.script.source)
    first = min(count, math.ceil(KEY_LIFE_MICROS / interval_micros(limit)))
    async with limiter.script.client.pipeline(transaction=True) as multi:
        for _ in range(first):  # the arguments RateLimiter.allow passes
            multi.evalsha(sha, 1, key, interval_micros(limit), capacity, now)
        decisions = [decision_from(limit, capacity, reply) for reply in await multi.execute()]
    for sent in range(first, count, ROUND):
        batch = [limiter.allow(key, limit, capacity, now_micros=now) for _ in range(min(ROUND, count - sent))]
        decisions += await asyncio.gather(*batch)
    return decisions


@pytest.mark.parametrize("tier", sorted(TIERS))
async def test_every_tier_empties_at_its_bucket_then_refills_at_its_rate(limiter, tier):
    """At a fixed clock: exactly the bucket admitted, then 429; one request back per 60/rate s and
    `rate` back a minute later, whatever the bucket holds."""
    rate, _, held = README_TIERS[tier]
    limit, capacity = tier_limits(tier)
    key = limiter_key("test", uuid.uuid4().hex)
    emptied = await at_instant(limiter, key, limit, capacity, START, held + 1)
    assert sum(d.allowed for d in emptied) == held
    assert [d.allowed for d in emptied] == [True] * held + [False]
    assert [d.remaining for d in emptied[:-1]] == list(range(held - 1, -1, -1))
    refused = emptied[-1]
    assert refused.remaining == 0 and refused.capacity == held and refused.limit == rate
    assert refused.retry_after == pytest.approx(60 / rate, abs=1e-6)  # one request regained per 60/rate s
    assert refused.reset_after == pytest.approx(held * 60 / rate, abs=1e-6)  # full again after the bucket's worth

    one_back = START + 60 * MICROS // rate
    assert not (await limiter.allow(key, limit, capacity, now_micros=one_back - 1)).allowed
    regained = await at_instant(limiter, key, limit, capacity, one_back, 2)
    assert [(d.allowed, d.remaining) for d in regained] == [(True, 0), (False, 0)]

    minute_later = await at_instant(limiter, key, limit, capacity, one_back + 60 * MICROS, rate + 1)
    assert sum(d.allowed for d in minute_later) == rate
    assert [d.allowed for d in minute_later] == [True] * rate + [False]
    assert minute_later[-2].remaining == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tier=st.sampled_from(sorted(TIERS)),
    gaps=st.lists(st.integers(0, 3_000_000), min_size=1, max_size=300),
)
async def test_script_agrees_with_reference_bucket(limiter, tier, gaps):
    limit, capacity = tier_limits(tier)
    key = limiter_key("test", uuid.uuid4().hex)
    model, now = TokenBucket(limit, capacity), START
    # The key expires in Redis' REAL time once the bucket would be full again (tested below),
    # which the fake clock here does not follow: a nearly full bucket's key lives 2-4 ms, and a
    # loaded machine pauses that long between calls. Once that much real time may have passed
    # since the last SET, the script may also answer as for a new, full bucket.
    may_expire_at = None  # the earliest real time Redis can have dropped the key
    for gap in gaps:
        now += gap
        sent = time.monotonic()
        decision = await limiter.allow(key, limit, capacity, now_micros=now)
        expired = may_expire_at is not None and time.monotonic() >= may_expire_at
        if expired and (decision.allowed, decision.remaining) == (True, capacity - 1):
            model = TokenBucket(limit, capacity)  # the script found no key: so does the model now
        assert decision.allowed == model.allow(now)
        if decision.allowed:
            assert decision.remaining == model.credit // model.interval
            ttl_ms = math.ceil(round(decision.reset_after * MICROS) / 1000) + 1  # the script's PX
            may_expire_at = sent + ttl_ms / 1000


async def test_a_key_expires_when_its_bucket_would_be_full_again(limiter):
    key = limiter_key("test", uuid.uuid4().hex)
    client = limiter.script.client
    await limiter.allow(key, 60, 60)  # free tier: one request regained per second
    assert 900 <= await client.pttl(key) <= 1002
    for _ in range(9):
        await limiter.allow(key, 60, 60)
    assert 9_000 <= await client.pttl(key) <= 10_002
