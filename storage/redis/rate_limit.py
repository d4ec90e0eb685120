"""Admit or refuse a request: GCRA in Redis (rate_limit.lua), one round trip.

A bucket holds `capacity` requests (limit + burst) and refills at `limit` per minute,
continuously. Requirements: never admit more than the bucket allows under any
concurrency (the script is atomic), use Redis' clock so API hosts' clocks do not
matter, and one key per limiter so Redis Cluster can place it.
"""

from dataclasses import dataclass

import redis.asyncio as redis

from storage.redis.scripts import Script

MICROS = 1_000_000


@dataclass(slots=True)  # not frozen: one per request, and a frozen __init__ costs twice as much
class Decision:
    allowed: bool
    limit: int  # per minute
    capacity: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one more request would be admitted (0 if allowed)


def interval_micros(limit: int) -> int:
    return 60 * MICROS // limit


def decision_from(limit: int, capacity: int, result) -> Decision:
    allowed, remaining, reset_us, wait_us = (int(v) for v in result)
    return Decision(bool(allowed), limit, capacity, remaining, reset_us / MICROS, wait_us / MICROS)


def limiter_key(kind: str, identity: str) -> str:
    # The braces are a hash tag: the whole key maps to one Cluster slot.
    return f"sluice:rl:{{{kind}:{identity}}}"


class RateLimiter:
    def __init__(self, client: redis.Redis):
        self.script = Script(client, "gcra.lua", "rate_limit.lua")

    async def allow(self, key: str, limit: int, capacity: int, now_micros: int | None = None) -> Decision:
        """Admit one request; `now_micros` replaces Redis' clock (tests only)."""
        args = [interval_micros(limit), capacity] + ([now_micros] if now_micros is not None else [])
        return decision_from(limit, capacity, await self.script([key], args))
