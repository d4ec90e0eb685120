"""Entitlements, the counting: where each feature's counter lives, what a workspace may use, and
how a usage is counted, made durable or taken back.

Limits come from the catalogue (app/resources/features.py) and the workspace's plan: its tier and
limit overrides, read from Postgres and kept in memory for SLUICE_ENTITLEMENTS_CACHE_SECONDS.
Counters live in Redis (storage/redis/quota.py: one atomic script checks and counts); stock
levels are written through to Postgres, which rebuilds them; every accepted record goes to the
usage topic through the sink (ingest/handoff/sink.py). No HTTP here: app/resources/entitlements.py
serves it, and `python -m app counters` (app/cli/counters.py) finds the same counters.
"""

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import orjson
import redis.asyncio as redis

from app.resources.features import Feature, billing_period, limit_for
from ingest.events import workspace_key
from ingest.handoff.sink import Sink
from storage.errors import Unavailable
from storage.postgres import entitlements, outbox
from storage.postgres.entitlements import Plan
from storage.redis.quota import Outcome, QuotaStatus, QuotaStore, counter_key

log = logging.getLogger("sluice.entitlements")

# A client's event id is remembered as long as an Idempotency-Key is (the spec's 24 hours).
MARKER_TTL_SECONDS = 86_400
# A metered counter outlives its month by a week, so last month's count can still be read.
PERIOD_GRACE = timedelta(days=7)
# Workspaces whose plan one process keeps; past it the cache starts over (bounded memory).
PLAN_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Counter:
    """One feature of one workspace, now: where it is counted and against what limit."""

    workspace_id: int
    feature: Feature
    key: str
    limit: int
    reset_at: datetime | None  # metered only: the first instant of the next period
    expire_at: int  # unix seconds the Redis counter expires; 0 never (stock)


def counter_place(workspace_id: int, feature: Feature, now: datetime) -> tuple[str, datetime | None, int]:
    """Where a feature's counter lives: (Redis key, reset_at, expire_at in unix seconds; 0 never)."""
    if not feature.metered:
        return counter_key(workspace_id, feature.key), None, 0
    period, reset_at = billing_period(now)
    return counter_key(workspace_id, feature.key, period), reset_at, int((reset_at + PERIOD_GRACE).timestamp())


def counter_for(workspace_id: int, feature: Feature, plan: Plan, now: datetime) -> Counter:
    key, reset_at, expire_at = counter_place(workspace_id, feature, now)
    return Counter(workspace_id, feature, key, limit_for(feature, plan.tier, plan.overrides), reset_at, expire_at)


def record_id(counter: Counter, event_id: str | None, now: datetime) -> str:
    if event_id is not None:
        # The same client event always maps to the same record: the log can deduplicate too.
        digest = hashlib.sha256(f"{counter.workspace_id}:{counter.feature.key}:{event_id}".encode())
        return "use_" + digest.hexdigest()[:32]
    return f"use_{int(now.timestamp() * 1000):012x}{os.urandom(10).hex()}"  # time-ordered, as UUIDv7


class PlanCache:
    """Workspace id → Plan for `ttl` seconds; concurrent misses share one Postgres query."""

    def __init__(self, pool: asyncpg.Pool, ttl: int):
        self.pool, self.ttl = pool, ttl
        self.entries: dict[int, tuple[float, Plan]] = {}
        self.loading: dict[int, asyncio.Future] = {}

    async def get(self, workspace_id: int) -> Plan:
        hit = self.entries.get(workspace_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self.loading.get(workspace_id)
        if task is None:
            task = self.loading[workspace_id] = asyncio.ensure_future(self._load(workspace_id))
        # Shielded: one waiter's request being cancelled must not cancel the others' load.
        return await asyncio.shield(task)

    async def _load(self, workspace_id: int) -> Plan:
        try:
            plan = await entitlements.get_plan(self.pool, workspace_id)
        finally:
            del self.loading[workspace_id]
        if len(self.entries) >= PLAN_CACHE_MAX:
            self.entries.clear()
        if self.ttl > 0:
            self.entries[workspace_id] = (time.monotonic() + self.ttl, plan)
        return plan


class Ledger:
    """This process's counting: the quota script (its SHA loaded once), the plan cache, and where
    stock levels (Postgres) and usage records (the sink's usage topic) go.

    Requirements: never over-grant, so Redis away means Unavailable (503); and a record that
    cannot be made durable is taken back and answered 503, never half kept.
    """

    def __init__(self, pool: asyncpg.Pool, client: redis.Redis, sink: Sink, usage_topic: str, plan_cache_seconds: int):
        self.pool, self.sink, self.usage_topic = pool, sink, usage_topic
        self.quota = QuotaStore(client)
        self.plans = PlanCache(pool, plan_cache_seconds)
        # (workspace, feature, month) already announced as limit_reached: a client hammering its
        # limit costs no Postgres write per refusal (the outbox deduplicates across processes).
        self.announced: set[tuple[int, str, str]] = set()

    async def read_usage(self, counters: list[Counter]) -> list[int]:
        """Every counter in one round trip; a stock counter Redis lost is rebuilt from Postgres."""
        values = await self.quota.read([c.key for c in counters])
        lost = [c for c, v in zip(counters, values, strict=True) if v is None and not c.feature.metered]
        if lost:
            stored = await entitlements.stock_usage(self.pool, lost[0].workspace_id, [c.feature.key for c in lost])
            rebuilt = await self.quota.rebuild({c.key: stored[c.feature.key] for c in lost})
            values = [rebuilt.get(c.key, v) for c, v in zip(counters, values, strict=True)]
        return [v or 0 for v in values]

    async def consume(self, counter: Counter, quantity: int, marker: str | None) -> Outcome:
        """Count atomically; a stock counter Redis lost is rebuilt from Postgres on the way."""

        async def attempt(start_from: int | None) -> Outcome:
            return await self.quota.consume(
                counter.key,
                marker,
                quantity,
                counter.limit,
                start_from=start_from,
                expire_at=counter.expire_at,
                marker_ttl=MARKER_TTL_SECONDS,
            )

        outcome = await attempt(0 if counter.feature.metered else None)
        if outcome.status is QuotaStatus.MISSING:
            stored = await entitlements.stock_usage(self.pool, counter.workspace_id, [counter.feature.key])
            outcome = await attempt(stored[counter.feature.key])
        return outcome

    async def publish(self, event: dict) -> None:
        """Durable once this returns: acknowledged by Kafka or fsync'd to the spool (ingest/handoff/producer.py)."""
        # SpoolFull (Kafka away and the spool full) leaves as a 503 through app/http/errors.py.
        await self.sink.send(self.usage_topic, workspace_key(event["workspace_id"]), orjson.dumps(event))

    async def make_durable(self, counter: Counter, marker: str | None, event: dict) -> None:
        """Stock level to Postgres, then the record to the sink; on any failure take the count back."""
        applied, written = event["quantity"], False
        try:
            if not counter.feature.metered:
                await entitlements.add_usage(self.pool, counter.workspace_id, counter.feature.key, applied)
                written = True
            await self.publish(event)
        except Exception:
            await self.take_back(counter, marker, applied, written)
            raise

    async def take_back(self, counter: Counter, marker: str | None, applied: int, written: bool) -> None:
        # Each undo on its own: one failing must not keep the other from running. What cannot be
        # undone leaves the counter over-counting, which refuses too early but never over-grants.
        try:
            await self.quota.release(counter.key, marker, applied)
        except Unavailable:
            log.error(
                "could not release %d %s of workspace %d in Redis", applied, counter.feature.key, counter.workspace_id
            )
        if written:
            try:
                await entitlements.add_usage(self.pool, counter.workspace_id, counter.feature.key, -applied)
            except Unavailable:
                log.error(
                    "could not undo %d %s of workspace %d in Postgres",
                    applied,
                    counter.feature.key,
                    counter.workspace_id,
                )

    async def announce_limit_reached(self, counter: Counter, used: int, now: datetime) -> None:
        """entitlement.limit_reached for webhooks, at most once per workspace, feature and calendar
        month (stock features too, so a workspace at its limit is not told on every refusal). The
        refusal stands even if the event cannot be written: it is logged, not raised."""
        period = billing_period(now)[0]
        mark = (counter.workspace_id, counter.feature.key, period)
        if mark in self.announced:
            return
        try:
            await outbox.emit_limit_reached(
                self.pool, counter.workspace_id, counter.feature.key, used, counter.limit, period, counter.reset_at
            )
            self.announced.add(mark)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the refusal is the answer
            log.error(
                "could not record entitlement.limit_reached for workspace %d, %s: %s",
                counter.workspace_id,
                counter.feature.key,
                exc,
            )
