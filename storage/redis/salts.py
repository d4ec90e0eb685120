"""The daily salt that visitor ids and pixel limiter keys are hashed with, shared through Redis.

Requirements: every API process uses the same salt on the same UTC day (so one visitor is one
id whichever process served them), the salt is forgotten after two days (so yesterday's ids
cannot be linked to today's), and Redis is asked once per day per process, not per request.
When Redis is unreachable a process makes a random salt of its own and says so once: its
visitor ids then differ from the other processes' until Redis answers again.
"""

import logging
import os
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger("sluice.salts")

# Two days: today's salt must outlive today for events that arrive around midnight.
SALT_TTL_SECONDS = 48 * 3600
# While Redis is away, ask again this often rather than on every request.
RETRY_SECONDS = 30.0
SALT_BYTES = 32


def salt_key(day: str) -> str:
    return f"sluice:salt:{{{day}}}"


class DailySalts:
    def __init__(self, client: redis.Redis):
        self.client = client
        self.day: str | None = None
        self.salt = b""
        self.shared = False  # False: a process-local salt, Redis was unreachable
        self.retry_at = 0.0

    def cached(self, day: str) -> bytes | None:
        """The salt of `day` if no Redis round trip is due (the hot path's case)."""
        if self.day == day and (self.shared or time.monotonic() < self.retry_at):
            return self.salt
        return None

    async def for_day(self, day: str) -> bytes:
        """`day` is 'YYYY-MM-DD' (UTC)."""
        salt = self.cached(day)
        return salt if salt is not None else await self._fetch(day)

    async def _fetch(self, day: str) -> bytes:
        try:
            salt = await self._shared(day)
        except (RedisError, OSError) as exc:
            if self.day != day:  # keep a local salt for the whole outage, not one per retry
                self.salt = os.urandom(SALT_BYTES)
            if self.shared or self.day != day:
                log.warning("redis unreachable (%s): visitor ids use a process-local salt for %s", exc, day)
            self.day, self.shared, self.retry_at = day, False, time.monotonic() + RETRY_SECONDS
            return self.salt
        if self.day == day and not self.shared:
            log.warning("redis reachable again: visitor ids use the shared salt for %s", day)
        self.day, self.salt, self.shared = day, salt, True
        return salt

    async def _shared(self, day: str) -> bytes:
        # SET NX then GET in one transaction: the first process of the day decides the salt.
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(salt_key(day), os.urandom(SALT_BYTES).hex(), nx=True, ex=SALT_TTL_SECONDS)
            pipe.get(salt_key(day))
            _created, value = await pipe.execute()
        return bytes.fromhex(value.decode() if isinstance(value, bytes) else value)
