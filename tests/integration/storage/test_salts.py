"""Visitor-id salts in a real Redis: one per period for every process, deleted a day after it ends."""

import os
import time
import uuid

from app.pixel.enrichment import salt_period
from storage.redis.client import create_client
from storage.redis.salts import Salts, salt_key


async def test_a_periods_salt_is_shared_and_deleted_a_day_after_the_period_ends():
    client = create_client(os.environ["REDIS_URL"])
    try:
        now_ms = int(time.time() * 1000)
        period = salt_period(now_ms, "weekly")
        name = f"{period.name}-{uuid.uuid4().hex[:8]}"  # this test's own key
        first = await Salts(client).for_period(name, period.salt_expires_at)
        second = await Salts(client).for_period(name, period.salt_expires_at)  # another process
        assert first == second and len(first) == 32
        expires_at = await client.expiretime(salt_key(name))
        assert expires_at == period.end_ms // 1000 + 86_400
        await client.delete(salt_key(name))
    finally:
        await client.aclose()
