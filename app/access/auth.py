"""Who is calling and may they: the Bearer key, its scopes, its workspace and its rate limit.

The hot path is one Redis round trip (storage/redis/key_gate.py): the cached key record
and the key's GCRA bucket together. Postgres is read only when the record is not cached
or Redis is away; `last_used_at` is kept in memory and written in one UPDATE every few seconds.
A key Postgres does not know is remembered briefly in process (UnknownKeys), and requests
without a valid key are limited per client address (app/access/rate_limits.py FailedAuthLimit).
"""

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg
from blacksheep import Request
from redis.exceptions import RedisError

from app.access.rate_limits import (
    FailedAuthLimit,
    Headers,
    LimitMode,
    LocalLimiter,
    RedisHealth,
    rate_limit_headers,
    rate_limited,
    tier_limits,
)
from app.access.scopes import grants
from app.access.tiers import capped
from app.access.tokens import hash_key, looks_like_key
from app.http.errors import AccessDenied, Unauthorized, ValidationFailed
from app.http.validation import parse_id
from storage.postgres import api_keys
from storage.redis.key_gate import KeyGate, KeyRecord
from storage.redis.rate_limit import Decision

log = logging.getLogger("sluice.auth")
PRINCIPALS_MAX = 10_000
# How long a key hash Postgres did not know is answered 401 from memory, and how many are kept.
# Keys are 238-bit secrets made server side, so no hash remembered here can become a valid key
# meanwhile; the TTL only bounds memory churn.
UNKNOWN_KEY_SECONDS = 30.0
UNKNOWN_KEYS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    workspace_id: int
    account_id: int
    scopes: frozenset[str]
    tier: str


def bearer_token(request) -> bytes:
    header = request.get_first_header(b"authorization")
    if header is None:
        raise Unauthorized()
    scheme, _, token = header.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not looks_like_key(token):
        raise Unauthorized()
    return token


def _unix(value) -> float | None:
    return None if value is None else value.timestamp()


def record_from_row(row: dict) -> KeyRecord:
    # The workspace's plan caps its keys: a downgrade slows every key at once (set-tier drops
    # the cached records), whatever rate_limit_tier a key was given.
    tier = capped(row["rate_limit_tier"], row["workspace_tier"])
    limit, capacity = tier_limits(tier)
    return KeyRecord(
        id=row["id"],
        workspace_id=row["workspace_id"],
        account_id=row["account_id"],
        scopes=tuple(row["scopes"]),
        tier=tier,
        expires_at=_unix(row["expires_at"]),
        revoked_at=_unix(row["revoked_at"]),
        limit=limit,
        capacity=capacity,
    )


def is_live(record: KeyRecord, now: float) -> bool:
    if record.revoked_at is not None and record.revoked_at <= now:
        return False
    return record.expires_at is None or record.expires_at > now


class UnknownKeys:
    """Key hashes Postgres did not know, each for UNKNOWN_KEY_SECONDS: a flood of one made-up key
    costs one lookup per process, not one per request. With one TTL for all, insertion order is
    expiry order, so the oldest entry is the one to drop when full."""

    def __init__(self) -> None:
        self.until: dict[bytes, float] = {}

    def __contains__(self, digest: bytes) -> bool:
        until = self.until.get(digest)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self.until[digest]
        return False

    def add(self, digest: bytes) -> None:
        if len(self.until) >= UNKNOWN_KEYS_MAX:
            del self.until[next(iter(self.until))]
        self.until[digest] = time.monotonic() + UNKNOWN_KEY_SECONDS


class Authenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        gate: KeyGate,
        local: LocalLimiter | None,
        flush_seconds: int,
        health: RedisHealth | None = None,
        failures: FailedAuthLimit | None = None,
    ):
        """`local` limits while Redis is away (None when rate limits are switched off); `health` is the
        process's view of Redis, shared with the pixel; `failures` None: failed attempts are not limited."""
        self.pool = pool
        self.gate = gate
        self.local = local
        self.health = health or RedisHealth()
        self.failures = failures
        self.unknown = UnknownKeys()
        self.flush_seconds = flush_seconds
        self.pending_last_used: dict[int, float] = {}
        self.pending_forget: set[bytes] = set()
        self._principals: dict[KeyRecord, Principal] = {}  # one per cached record, not per request
        self._tasks: list[asyncio.Task] = []

    async def admit(self, request: Request) -> tuple[Principal, Decision, LimitMode]:
        """The caller, the rate-limit decision, and who made it (LOCAL: Redis is away). A 401 spends
        one of the address's budget of requests without a valid key and carries its headers."""
        if self.failures is None:
            return await self._admit(hash_key(bearer_token(request)))
        await self.failures.check(request)  # an address over its budget: 429 before any lookup
        try:
            return await self._admit(hash_key(bearer_token(request)))
        except Unauthorized as exc:
            exc.headers = exc.headers + await self.failures.spend(request)  # the last of the budget: 429
            raise

    async def meter(self, request: Request) -> Headers:
        """A request no route answers (404, 405) is counted too: against its key's bucket when it
        carries a valid key, else against its address's budget (no headers when that is off).
        429 once the budget that applies is spent."""
        if self.failures is not None:
            await self.failures.check(request)
        try:
            principal, decision, mode = await self._admit(hash_key(bearer_token(request)))
        except Unauthorized:
            return await self.failures.spend(request) if self.failures is not None else []
        headers = rate_limit_headers(decision, principal.tier, mode)
        if not decision.allowed:
            raise rate_limited(decision, headers)
        return headers

    async def _admit(self, digest: bytes) -> tuple[Principal, Decision, LimitMode]:
        if digest in self.unknown:
            raise Unauthorized()
        loaded: KeyRecord | None = None
        hit: tuple[KeyRecord, Decision] | Literal[False] | None = None
        if self.health.usable():
            hit = await self._check_cached(digest)
            if hit is False:  # not cached: Postgres answers, then the same round trip again
                loaded = await self._load(digest)
                hit = await self._check_cached(digest, remember=loaded)
        if hit:
            (record, decision), mode = hit, LimitMode.SHARED
        else:
            self.health.fallback_requests += 1
            record = loaded or await self._load(digest)
            decision = (
                self.local.allow(digest.hex(), record.limit, record.capacity)
                if self.local
                else Decision(True, record.limit, record.capacity, record.capacity, 0.0, 0.0)
            )
            mode = LimitMode.LOCAL
        now = time.time()
        if not is_live(record, now):
            raise Unauthorized("API key expired or revoked.")
        self.pending_last_used[record.id] = now
        return self._principal(record), decision, mode

    def _principal(self, record: KeyRecord) -> Principal:
        principal = self._principals.get(record)
        if principal is None:
            if len(self._principals) >= PRINCIPALS_MAX:
                self._principals.clear()
            principal = self._principals[record] = Principal(
                record.id, record.workspace_id, record.account_id, frozenset(record.scopes), record.tier
            )
        return principal

    async def _check_cached(
        self, digest: bytes, remember: KeyRecord | None = None
    ) -> tuple[KeyRecord, Decision] | Literal[False] | None:
        """(record, decision) from Redis; False when not cached; None when Redis failed."""
        try:
            if remember is not None:
                await self.gate.remember(digest, remember)
            hit = await self.gate.check(digest)
        except (RedisError, OSError) as exc:
            self.health.failed(exc)
            return None
        self.health.succeeded()
        return hit if hit is not None else False

    async def _load(self, digest: bytes) -> KeyRecord:
        row = await api_keys.find_by_hash(self.pool, digest)
        # Found by hash; comparing the hash again in constant time keeps the final
        # decision free of timing differences whatever the index lookup did.
        if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
            self.unknown.add(digest)
            raise Unauthorized()
        return record_from_row(row)

    def last_used(self, key_id: int) -> datetime | None:
        """This process's not yet written last use of a key."""
        used = self.pending_last_used.get(key_id)
        return None if used is None else datetime.fromtimestamp(used, UTC)

    async def forget(self, key_hashes: list[bytes]) -> None:
        """Drop cached records after a revocation, rotation or tier change; retried if Redis is away."""
        self.pending_forget.update(key_hashes)
        await self._forget_pending()

    async def _forget_pending(self) -> None:
        if not self.pending_forget:
            return
        hashes = list(self.pending_forget)
        try:
            await self.gate.forget(hashes)
            self.pending_forget.difference_update(hashes)
        except (RedisError, OSError):
            log.warning("could not drop %d cached key records yet; retrying", len(hashes))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._flush_forever()), loop.create_task(self.health.watch(self.gate.client))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.flush()

    async def flush(self) -> None:
        pending, self.pending_last_used = self.pending_last_used, {}
        try:
            await api_keys.touch_last_used(
                self.pool, {key_id: datetime.fromtimestamp(t, UTC) for key_id, t in pending.items()}
            )
        except Exception:  # noqa: BLE001 - losing a last_used_at update must not kill the loop
            log.warning("could not record last_used_at for %d keys", len(pending), exc_info=True)
        await self._forget_pending()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()


def require_scope(principal: Principal, scope: str) -> None:
    if not grants(principal.scopes, scope):
        raise AccessDenied(f"Insufficient permissions. Required scope: {scope}")


def check_workspace_header(request, principal: Principal) -> None:
    """`X-Workspace-ID`, where sent, must name the key's own workspace."""
    raw = request.get_first_header(b"x-workspace-id")
    if raw is None:
        return
    try:
        workspace_id = parse_id(raw.decode("latin-1"))
    except ValueError:
        raise ValidationFailed({"X-Workspace-ID": ["The X-Workspace-ID header must be a workspace id."]}) from None
    if workspace_id != principal.workspace_id:
        raise AccessDenied(f"This API key cannot act on workspace {workspace_id}.")
