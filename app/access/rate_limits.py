"""Rate limits per tier, the response headers that report them, the fallback when Redis is away,
and the budget of requests without a valid key per client address.

Requirements, in order: never admit more than limit + burst per key while Redis is up;
keep serving when Redis is down (each process then limits locally at its share of the
limit and says so in `X-RateLimit-Mode: local`); log one line per outage, not per request;
notice Redis is back without waiting for a request to try it.

One model for every header and 429 body: the limit is the bucket's capacity (the tier's rate
plus its burst), remaining is what is left of it (never more than the limit), and the reset is
when the bucket is full again. A client that spends `limit - remaining` has made that many requests.
"""

import asyncio
import enum
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError

from app.http.client_ip import Network, ip_digest, request_client_address
from app.http.errors import RateLimited
from app.http.presenters import iso
from storage.redis.client import ping
from storage.redis.rate_limit import MICROS, Decision, RateLimiter, interval_micros, limiter_key
from storage.redis.salts import Salts
from storage.telemetry.metrics import ApiMetrics

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
# While Redis is marked down, PING it this often: /metrics and the next request see it back.
REDIS_PROBE_SECONDS = 1.0
# Addresses refused for failed authentications, remembered per process; past this many the
# expired ones are dropped, then all (Redis still holds every address's budget).
REFUSED_ADDRESSES_MAX = 100_000
# The policy name the headers give the per-address budget of requests without a valid key.
UNAUTHENTICATED = "unauthenticated"
Headers = list[tuple[bytes, bytes]]


class LimitMode(enum.StrEnum):
    """Who decided a request's rate limit; `X-RateLimit-Mode: local` tells a caller it was not Redis."""

    SHARED = "shared"  # Redis: one budget across every process
    LOCAL = "local"  # this process alone, at its share of the limit, while Redis is away


def tier_limits(tier: str) -> tuple[int, int]:
    """(limit per minute, bucket capacity = limit × (1 + burst))."""
    limit, burst = TIERS[tier]
    return limit, limit * (100 + burst) // 100


def refill_seconds(decision: Decision) -> int:
    """Seconds the bucket takes to fill from empty at its rate: the window of its policy."""
    return math.ceil(decision.capacity * interval_micros(decision.limit) / MICROS)


def rate_limit_headers(decision: Decision, policy: str, mode: LimitMode = LimitMode.SHARED) -> Headers:
    """The headers of one decision: Limit is the bucket's capacity, Remaining what is left of it,
    Reset (and the IETF draft's t) when it is full again."""
    reset_in = math.ceil(decision.reset_after)
    headers = [
        (b"X-RateLimit-Limit", str(decision.capacity).encode()),
        (b"X-RateLimit-Remaining", str(decision.remaining).encode()),
        (b"X-RateLimit-Reset", str(math.ceil(time.time() + decision.reset_after)).encode()),
        # IETF draft-ietf-httpapi-ratelimit-headers: quota q over the w seconds that refill it whole.
        (b"RateLimit-Policy", f'"{policy}";q={decision.capacity};w={refill_seconds(decision)}'.encode()),
        (b"RateLimit", f'"{policy}";r={decision.remaining};t={reset_in}'.encode()),
    ]
    if not decision.allowed:
        headers.append((b"Retry-After", str(retry_seconds(decision)).encode()))
    if mode is LimitMode.LOCAL:
        headers.append((b"X-RateLimit-Mode", b"local"))
    return headers


def refusal_policy(headers: Headers) -> str:
    """Which budget a 429 with these headers spent, as sluice_rate_limit_refusals_total names it:
    pixel (the per-IP budget, app/pixel/track.py), auth (requests without a valid key) or key."""
    for name, value in headers:
        if name.lower() == b"ratelimit-policy":
            policy = value.split(b";", 1)[0].strip(b'"')
            return "pixel" if policy == b"pixel" else "auth" if policy == UNAUTHENTICATED.encode() else "key"
    return "key"


def retry_seconds(decision: Decision) -> int:
    return max(1, math.ceil(decision.retry_after))


def rate_limited(decision: Decision, headers: Headers | None = None) -> RateLimited:
    """The 429 of a refused decision: its body states the same limit and reset as its headers."""
    reset_at = datetime.fromtimestamp(time.time() + decision.reset_after, UTC)
    error = RateLimited(retry_seconds(decision), decision.capacity, iso(reset_at))
    if headers is not None:
        error.headers = headers
    return error


class LocalLimiter:
    """The same GCRA as rate_limit.lua, in process memory, for when Redis is unreachable."""

    def __init__(self, share: int):
        self.share = max(1, share)
        self.tats: dict[str, int] = {}

    def allow(self, key: str, limit: int, capacity: int, now_micros: int | None = None) -> Decision:
        """Admit one request against this process's share of the bucket; `now_micros` replaces
        the clock (tests only), as RateLimiter.allow's does."""
        limit = max(1, limit // self.share)
        capacity = max(1, capacity // self.share)
        interval = interval_micros(limit)
        now = time.monotonic_ns() // 1000 if now_micros is None else now_micros
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
    """Whether to try Redis now; counts outages and requests served without it (`metrics`, when
    given, shows the outage as sluice_redis_down; app/http/metrics.py publishes fallback_requests)."""

    down_since: float | None = None
    retry_at: float = 0.0
    outages: int = 0
    fallback_requests: int = 0
    metrics: ApiMetrics | None = None

    def __post_init__(self) -> None:
        if self.metrics is not None:
            self.metrics.redis_down.set(0)

    def usable(self) -> bool:
        return self.down_since is None or time.monotonic() >= self.retry_at

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
            if self.metrics is not None:
                self.metrics.redis_down.set(1)
                self.metrics.redis_outages.inc()
            log.warning("redis unreachable (%s): limiting locally and refusing quota changes until it returns", exc)
        self.retry_at = now + REDIS_RETRY_SECONDS

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.warning("redis reachable again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
            if self.metrics is not None:
                self.metrics.redis_down.set(0)

    async def watch(self, client) -> None:
        """For the process's life: PING Redis while it is marked down, so recovery does not wait
        for an authenticated request (sluice_redis_down stayed 1 on an idle process)."""
        while True:
            await asyncio.sleep(REDIS_PROBE_SECONDS)
            if self.down_since is None:
                continue
            try:
                await ping(client)
            except (RedisError, OSError) as exc:
                self.failed(exc)
            else:
                self.succeeded()


@dataclass(frozen=True, slots=True)
class Refusal:
    """An address over its budget, remembered in process: when it may retry, when its bucket is full."""

    retry_at: float  # unix time
    full_at: float
    decision: Decision  # the refusing decision, for its limit and capacity

    def now(self) -> Decision:
        now = time.time()
        d = self.decision
        return Decision(False, d.limit, d.capacity, 0, max(0.0, self.full_at - now), max(0.0, self.retry_at - now))


class FailedAuthLimit:
    """A budget per client address of requests without a valid key: `per_minute`, refilling continuously.

    Requirements: a key guesser gets a few tries a second, not thousands (each unknown key costs
    a Postgres lookup); callers with a valid key pay nothing; an address over its budget gets 429
    before its key is looked up, and costs no Redis round trip while its refusal lasts (each
    process remembers it); the address is only ever a keyed hash (the daily salt, as the pixel's
    limiter). Everyone behind one address shares its budget, as they share the pixel's.
    Every request that spends it (a 401, or a 404/405 without a valid key) carries its headers.
    """

    def __init__(self, client, health: RedisHealth, per_minute: int, share: int, trusted: tuple[Network, ...]):
        self.limiter = RateLimiter(client)
        self.local = LocalLimiter(share)
        self.salts = Salts(client)
        self.health = health
        self.per_minute = per_minute
        self.trusted = trusted
        self.refused: dict[str, Refusal] = {}  # bucket key → its refusal

    async def check(self, request) -> None:
        """429 while the caller's address is refused; free while no address is."""
        if not self.refused:
            return
        key = await self._bucket(request)
        refusal = self.refused.get(key)
        if refusal is None:
            return
        if refusal.retry_at <= time.time():
            del self.refused[key]
            return
        raise self._refusal(refusal.now(), LimitMode.SHARED)

    async def spend(self, request) -> Headers:
        """Count one request without a valid key: its rate-limit headers, or 429 once the budget is spent."""
        key = await self._bucket(request)
        decision, mode = await self._allow(key)
        if decision.allowed:
            return rate_limit_headers(decision, UNAUTHENTICATED, mode)
        now = time.time()
        if len(self.refused) >= REFUSED_ADDRESSES_MAX:
            self.refused = {k: v for k, v in self.refused.items() if v.retry_at > now}
            if len(self.refused) >= REFUSED_ADDRESSES_MAX:
                self.refused.clear()
        self.refused[key] = Refusal(now + decision.retry_after, now + decision.reset_after, decision)
        raise self._refusal(decision, mode)

    async def _bucket(self, request) -> str:
        address = request_client_address(request, self.trusted)
        salt = await self.salts.for_day(time.strftime("%Y-%m-%d", time.gmtime()))
        return limiter_key("auth-failures", ip_digest(address, salt))

    async def _allow(self, key: str) -> tuple[Decision, LimitMode]:
        if self.health.usable():
            try:
                decision = await self.limiter.allow(key, self.per_minute, self.per_minute)
                self.health.succeeded()
                return decision, LimitMode.SHARED
            except (RedisError, OSError) as exc:
                self.health.failed(exc)
        return self.local.allow(key, self.per_minute, self.per_minute), LimitMode.LOCAL

    @staticmethod
    def _refusal(decision: Decision, mode: LimitMode) -> RateLimited:
        error = rate_limited(decision, rate_limit_headers(decision, UNAUTHENTICATED, mode))
        error.message = (
            "Too many failed authentications from this address. "
            f"Please retry after {error.extra['retry_after']} seconds."
        )
        return error
