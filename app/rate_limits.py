"""Rate limits per tier, the response headers that report them, and the fallback when Redis is away.

Requirements, in order: never admit more than limit + burst per key while Redis is up;
keep serving when Redis is down (each process then limits locally at its share of the
limit and says so in `X-RateLimit-Mode: local`); log one line per outage, not per request.
"""

import logging
import math
import time
from dataclasses import dataclass

from storage.redis.rate_limit import Decision, interval_micros

log = logging.getLogger("sluice.rate_limits")

# (requests per minute, burst %) from the spec's "Rate Limits" table.
TIERS = {
    "free": (60, 0),
    "starter": (1_000, 20),
    "pro": (5_000, 30),
    "agency": (20_000, 50),
    "enterprise": (100_000, 100),
}
# After a failed Redis call, skip Redis for this long instead of paying a timeout per request.
REDIS_RETRY_SECONDS = 1.0


def tier_limits(tier: str) -> tuple[int, int]:
    """(limit per minute, bucket capacity = limit × (1 + burst))."""
    limit, burst = TIERS[tier]
    return limit, limit * (100 + burst) // 100


def rate_limit_headers(decision: Decision, policy: str) -> list[tuple[bytes, bytes]]:
    reset_at = math.ceil(time.time() + decision.reset_after)
    reset_in = math.ceil(decision.reset_after)
    headers = [
        (b"X-RateLimit-Limit", str(decision.limit).encode()),
        (b"X-RateLimit-Remaining", str(decision.remaining).encode()),
        (b"X-RateLimit-Reset", str(reset_at).encode()),
        # IETF draft-ietf-httpapi-ratelimit-headers: quota per 60 s window, and what is left.
        (b"RateLimit-Policy", f'"{policy}";q={decision.limit};w=60'.encode()),
        (b"RateLimit", f'"{policy}";r={decision.remaining};t={reset_in}'.encode()),
    ]
    if not decision.allowed:
        headers.append((b"Retry-After", str(max(1, math.ceil(decision.retry_after))).encode()))
    return headers


class LocalLimiter:
    """The same GCRA as rate_limit.lua, in process memory, for when Redis is unreachable."""

    def __init__(self, share: int):
        self.share = max(1, share)
        self.tats: dict[str, int] = {}

    def allow(self, key: str, limit: int, capacity: int) -> Decision:
        limit = max(1, limit // self.share)
        capacity = max(1, capacity // self.share)
        interval = interval_micros(limit)
        now = time.monotonic_ns() // 1000
        tat = max(self.tats.get(key, now), now)
        new_tat = tat + interval
        allow_at = new_tat - capacity * interval
        if now < allow_at:
            return Decision(False, limit, capacity, 0, (tat - now) / 1e6, (allow_at - now) / 1e6)
        self.tats[key] = new_tat
        if len(self.tats) > 100_000:  # an outage must not grow memory without bound
            self.tats = {k: v for k, v in self.tats.items() if v > now}
        return Decision(True, limit, capacity, (now - allow_at) // interval, (new_tat - now) / 1e6, 0.0)


@dataclass
class RedisHealth:
    """Whether to try Redis now; counts outages and requests served without it."""

    down_since: float | None = None
    retry_at: float = 0.0
    outages: int = 0
    fallback_requests: int = 0

    def usable(self) -> bool:
        return self.down_since is None or time.monotonic() >= self.retry_at

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
            log.warning("redis unreachable (%s): limiting locally and refusing quota changes until it returns", exc)
        self.retry_at = now + REDIS_RETRY_SECONDS

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.warning("redis reachable again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
