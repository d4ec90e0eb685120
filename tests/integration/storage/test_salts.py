"""Visitor-id salts in a real Redis: one per period for every process, deleted a day after it ends."""

import os
import time
import uuid
from dataclasses import replace

import pytest

from app.pixel.enrichment import salt_period
from app.pixel.intake import Pixel
from app.pixel.sites import Site
from ingest.handoff.sink import InMemorySink
from storage.config import load
from storage.redis.client import create_client
from storage.redis.salts import Salts, salt_key

SITE = Site(1, 7, "salts.sluice-tests.org", True, True, True, True, 1.0)


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


@pytest.mark.parametrize("rotation", ["daily", "weekly", "monthly"])
async def test_a_fresh_process_gets_a_sites_visitor_salts_on_any_day_of_its_period(rotation):
    """A new process asks Redis for a site's salts on its first event, at any moment of the period;
    the previous period's salt comes along only near the change, where events carry the alias."""
    client = create_client(os.environ["REDIS_URL"])
    try:
        site = replace(SITE, visitor_id_rotation=rotation)
        period = salt_period(int(time.time() * 1000), rotation)
        for moment in (period.start_ms + 5 * 60_000, period.end_ms - 5 * 60_000):  # near the change, and long after
            fresh = Pixel(load({"SLUICE_RATE_LIMITS": "off"}), None, client, InMemorySink())
            salt, previous, timeout = await fresh.visitor(site, moment)
            assert len(salt) == 32 and timeout == 1800
            near = moment - period.start_ms < 3_600_000
            assert (previous is not None) is near and previous != salt
            assert fresh.cached_visitor(site, moment) == (salt, previous, timeout)
    finally:
        await client.aclose()
