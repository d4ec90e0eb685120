"""Scripts share one pipelined write per event-loop tick: each call still gets its own answer."""

import asyncio
import os
import uuid

import pytest
from redis.exceptions import RedisError, ResponseError

from storage.redis.client import close_client, create_client
from storage.redis.rate_limit import RateLimiter, limiter_key
from storage.redis.scripts import pack_evalsha


@pytest.fixture
async def client():
    c = create_client(os.environ["REDIS_URL"])
    yield c
    await close_client(c)


def test_pack_evalsha_is_resp():
    assert pack_evalsha(b"abc", ["k"], [7, b"x"]) == (
        b"*6\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\n7\r\n$1\r\nx\r\n"
    )


async def test_calls_in_one_tick_share_a_write_and_get_their_own_replies(client):
    limiter = RateLimiter(client)
    key = limiter_key("test", uuid.uuid4().hex)
    decisions = await asyncio.gather(*[limiter.allow(key, 60, 10) for _ in range(25)])
    assert sum(d.allowed for d in decisions) == 10
    # Each reply went to its own caller: the remaining counts are 9, 8, ... 0 exactly once each.
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))


async def test_a_script_flushed_from_redis_is_loaded_again(client):
    limiter = RateLimiter(client)
    key = limiter_key("test", uuid.uuid4().hex)
    assert (await limiter.allow(key, 60, 5)).allowed
    await client.script_flush()
    decisions = await asyncio.gather(*[limiter.allow(key, 60, 5) for _ in range(6)])
    assert sum(d.allowed for d in decisions) == 4  # 5 in the bucket, one taken before the flush


async def test_one_failing_call_does_not_fail_its_neighbours(client):
    limiter = RateLimiter(client)
    await limiter.allow(limiter_key("test", "warm"), 60, 5)
    key = limiter_key("test", uuid.uuid4().hex)
    # A non-numeric interval makes the Lua arithmetic fail for that call only.
    bad, fine, also_fine = await asyncio.gather(
        limiter.script([key], ["not-a-number", 5]),
        limiter.allow(key, 60, 5),
        limiter.allow(key, 60, 5),
        return_exceptions=True,
    )
    assert isinstance(bad, ResponseError)
    assert fine.allowed and also_fine.allowed and also_fine.remaining == fine.remaining - 1


async def test_redis_away_fails_every_call_of_the_batch_with_a_redis_error():
    client = create_client("redis://127.0.0.1:1/0")  # nothing listens on port 1
    limiter = RateLimiter(client)
    limiter.script.sha = "0" * 40  # skip SCRIPT LOAD: the batch itself must fail cleanly
    try:
        results = await asyncio.gather(
            *[limiter.allow(limiter_key("t", str(i)), 60, 5) for i in range(3)], return_exceptions=True
        )
    finally:
        await close_client(client)
    assert all(isinstance(r, (RedisError, OSError)) for r in results)


async def test_callers_arriving_before_the_script_is_loaded_load_it_once(client):
    limiter = RateLimiter(client)
    before = (await client.info("commandstats")).get("cmdstat_script|load", {}).get("calls", 0)
    decisions = await asyncio.gather(
        *[limiter.allow(limiter_key("test", uuid.uuid4().hex), 60, 5) for _ in range(2000)]
    )
    assert all(d.allowed for d in decisions)
    # Other tests may load scripts meanwhile, but never 2,000 times.
    assert (await client.info("commandstats")).get("cmdstat_script|load", {}).get("calls", 0) - before < 5
