"""The salts that visitor ids and pixel limiter keys are hashed with, shared through Redis.

A salt belongs to a period: a UTC day ('2026-12-02'), an ISO week ('2026-W49') or a month
('2026-12') — a site's visitor_id_rotation says which (app/pixel/enrichment.py). Requirements: every
API process uses the same salt for the same period (so one visitor is one id whichever process
served them), a salt is forgotten one day after its period ends (so the ids of one period cannot be
linked to the next), and Redis is asked once per period per process, not per request. When Redis is
unreachable a process makes a random salt of its own and says so once: its visitor ids then differ
from the other processes' until Redis answers again.
"""

import logging
import os
import time
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger("sluice.salts")

# A day's salt lives two days: it must outlive its day for events that arrive around midnight.
SALT_TTL_SECONDS = 48 * 3600
# While Redis is away, ask again this often rather than on every request.
RETRY_SECONDS = 30.0
SALT_BYTES = 32
# Periods a process remembers at once: today's and yesterday's of each rotation, and the limiter's.
MAX_CACHED = 16


def salt_key(period: str) -> str:
    return f"sluice:salt:{{{period}}}"


@dataclass(slots=True)
class Cached:
    salt: bytes
    shared: bool  # False: a process-local salt, Redis was unreachable
    retry_at: float


class Salts:
    def __init__(self, client: redis.Redis):
        self.client = client
        self.periods: dict[str, Cached] = {}

    def cached(self, period: str) -> bytes | None:
        """The salt of `period` if no Redis round trip is due (the hot path's case)."""
        entry = self.periods.get(period)
        if entry is not None and (entry.shared or time.monotonic() < entry.retry_at):
            return entry.salt
        return None

    async def for_period(self, period: str, expires_at: int) -> bytes:
        """The salt of `period`, deleted from Redis at `expires_at` (epoch seconds)."""
        salt = self.cached(period)
        # Never a time already past: Redis would drop the key at once and the GET find nothing.
        expiry = {"exat": max(expires_at, int(time.time() + RETRY_SECONDS))}
        return salt if salt is not None else await self._fetch(period, expiry)

    async def for_day(self, day: str) -> bytes:
        """`day` is 'YYYY-MM-DD' (UTC); its salt lives SALT_TTL_SECONDS from first use (the limiter's)."""
        salt = self.cached(day)
        return salt if salt is not None else await self._fetch(day, {"ex": SALT_TTL_SECONDS})

    async def _fetch(self, period: str, expiry: dict) -> bytes:
        entry = self.periods.get(period)
        try:
            salt = await self._shared(period, expiry)
        except (RedisError, OSError) as exc:
            if entry is None:  # keep a local salt for the whole outage, not one per retry
                entry = Cached(os.urandom(SALT_BYTES), True, 0.0)
            if entry.shared:
                log.warning("redis unreachable (%s): visitor ids use a process-local salt for %s", exc, period)
            self._keep(period, Cached(entry.salt, False, time.monotonic() + RETRY_SECONDS))
            return entry.salt
        if entry is not None and not entry.shared:
            log.warning("redis reachable again: visitor ids use the shared salt for %s", period)
        self._keep(period, Cached(salt, True, 0.0))
        return salt

    def _keep(self, period: str, entry: Cached) -> None:
        if period not in self.periods and len(self.periods) >= MAX_CACHED:
            del self.periods[next(iter(self.periods))]  # the oldest asked for
        self.periods[period] = entry

    async def _shared(self, period: str, expiry: dict) -> bytes:
        # SET NX then GET in one transaction: the first process of the period decides the salt.
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(salt_key(period), os.urandom(SALT_BYTES).hex(), nx=True, **expiry)
            pipe.get(salt_key(period))
            _created, value = await pipe.execute()
        return bytes.fromhex(value.decode() if isinstance(value, bytes) else value)
