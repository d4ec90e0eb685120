"""Every tier's bucket emptied by concurrent callers on Redis' own clock, through both scripts that
admit: rate_limit.lua (RateLimiter: the pixel, failed authentications) and key_gate.lua (KeyGate:
every request with an API key).

GCRA admits at most the bucket plus what refilled between the first and the last call Redis ran,
one request per 60/rate s; both calls lie inside the time measured here around the whole burst, so
`admitted ≤ capacity + ceil(rate × elapsed / 60)` holds exactly, on any machine, however slow.
And once any call was refused, the bucket was emptied: `admitted ≥ capacity`.
"""

import asyncio
import contextlib
import math
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.access.rate_limits import TIERS, tier_limits
from storage.redis.client import close_client, create_client
from storage.redis.key_gate import KeyGate, KeyRecord
from storage.redis.rate_limit import Decision, RateLimiter, limiter_key

CALLERS = 4  # each with a client (a connection) of its own: Redis interleaves their calls
ROUND = 2_000  # calls one caller has in flight at once
REFUSALS = ROUND  # stop once this many were refused: the bucket is empty and stays so
DEADLINE_SECONDS = 180  # enterprise holds 200,000 and refills 1,667 a second

Call = Callable[[], Awaitable[Decision]]


@contextlib.asynccontextmanager
async def callers(make_call: Callable[..., Awaitable[Call]]) -> AsyncIterator[list[Call]]:
    clients = [create_client(os.environ["REDIS_URL"]) for _ in range(CALLERS)]
    try:
        yield [await make_call(client) for client in clients]
    finally:
        for client in clients:
            await close_client(client)


async def burst(calls: list[Call], capacity: int, rate: int) -> tuple[list[Decision], float]:
    """Every caller sends rounds at once until the bucket has refused REFUSALS calls; the decisions
    and the seconds from before the first call was sent to after the last answer came back."""
    decisions: list[Decision] = []
    refused = 0

    async def caller(call: Call) -> None:
        nonlocal refused
        while refused < REFUSALS:
            assert time.monotonic() < deadline, (
                f"the bucket of {capacity} never emptied: {len(decisions) - refused} admitted in "
                f"{time.time() - started:.1f} s, refilling {rate} a minute"
            )
            answers = await asyncio.gather(*[call() for _ in range(ROUND)])
            decisions.extend(answers)
            refused += sum(not d.allowed for d in answers)

    deadline = time.monotonic() + DEADLINE_SECONDS
    started = time.time()  # the clock Redis' TIME reads, so no other clock's drift enters the bound
    await asyncio.gather(*[caller(call) for call in calls])
    return decisions, time.time() - started


def assert_within_the_bucket(decisions: list[Decision], elapsed: float, rate: int, capacity: int) -> None:
    admitted = sum(d.allowed for d in decisions)
    refill = math.ceil(rate * elapsed / 60)
    assert capacity <= admitted <= capacity + refill, (
        f"{admitted} admitted in {elapsed:.3f} s: the bucket holds {capacity} and refilled at most {refill}"
    )
    refusals = [d for d in decisions if not d.allowed]
    assert {d.remaining for d in refusals} == {0}
    assert all(0 < d.retry_after <= 60 / rate + 1e-6 for d in refusals)
    assert all(0 <= d.remaining < capacity for d in decisions if d.allowed)


def rate_limiter_call(tier: str) -> Callable[..., Awaitable[Call]]:
    limit, capacity = tier_limits(tier)
    key = limiter_key("test", uuid.uuid4().hex)

    async def make(client) -> Call:
        limiter = RateLimiter(client)
        return lambda: limiter.allow(key, limit, capacity)

    return make


def key_gate_call(tier: str) -> Callable[..., Awaitable[Call]]:
    """The gate of one API key whose record is cached, as the first authenticated request leaves it."""
    limit, capacity = tier_limits(tier)
    digest = secrets.token_bytes(32)
    record = KeyRecord(1, 1, 1, ("*",), tier, None, None, limit, capacity)

    async def make(client) -> Call:
        gate = KeyGate(client)
        await gate.remember(digest, record)

        async def call() -> Decision:
            hit = await gate.check(digest)
            if hit is None:  # the record's 60 s ran out during a slow burst: cached again, as the API does
                await gate.remember(digest, record)
                hit = await gate.check(digest)
            assert hit is not None and hit[0] == record
            return hit[1]

        return call

    return make


@pytest.mark.parametrize("script", [rate_limiter_call, key_gate_call], ids=["rate_limit.lua", "key_gate.lua"])
@pytest.mark.parametrize("tier", sorted(TIERS))
async def test_concurrent_callers_empty_the_bucket_and_get_no_more_than_it_refilled(tier, script):
    rate, capacity = tier_limits(tier)
    async with callers(script(tier)) as calls:
        decisions, elapsed = await burst(calls, capacity, rate)
    assert_within_the_bucket(decisions, elapsed, rate, capacity)
