"""Entitlement counters against their record of truth: rebuild them, or report how far they drift.

Redis holds the live counters (storage/redis/quota.py). The truth is Postgres' entitlement_usage
for stock features and ClickHouse's usage_events for metered ones, summed over the current
billing period. `python -m app counters rebuild | drift` (app/__main__.py) runs these.
"""

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from app.resources.features import FEATURES, billing_period
from app.resources.ledger import counter_place
from storage.clickhouse import client as clickhouse
from storage.postgres import entitlements
from storage.redis.quota import QuotaStore

METERED = [f.key for f in FEATURES.values() if f.metered]


@dataclass(frozen=True, slots=True)
class Count:
    """One counter: what Redis holds and what its record of truth says it should."""

    workspace_id: int
    feature: str
    key: str
    expire_at: int  # unix seconds, as quota.lua sets it on every consume; 0 never (stock)
    source: int
    redis: int | None  # None: Redis has no such counter

    @property
    def drift(self) -> int:
        """Redis minus the record: negative where Redis lost counts, positive where it has more."""
        return (self.redis or 0) - self.source


def period_bounds(now: datetime) -> tuple[str, datetime, datetime]:
    """The billing period holding `now`: its label, first instant and the first of the next."""
    label, end = billing_period(now)
    start = datetime.strptime(label, "%Y-%m").replace(tzinfo=UTC)
    return label, start, end


async def expected(pool: asyncpg.Pool, ch, workspace_id: int | None, now: datetime) -> list[Count]:
    """Every counter of every workspace (or the one) with its source value; Redis not read yet."""
    _, start, end = period_bounds(now)
    stock = await entitlements.stock_levels(pool, workspace_id)
    metered = await asyncio.to_thread(clickhouse.metered_usage, ch, METERED, start, end, workspace_id)
    counts = []
    for ws, levels in stock.items():
        for feature in FEATURES.values():
            key, _, expiry = counter_place(ws, feature, now)
            value = metered.get((ws, feature.key), 0) if feature.metered else levels.get(feature.key, 0)
            counts.append(Count(ws, feature.key, key, expiry, value, None))
    return counts


async def with_redis(quota: QuotaStore, counts: list[Count]) -> list[Count]:
    # One MGET per workspace: its keys share a hash tag, so this holds on a Redis Cluster too.
    by_workspace: dict[int, list[Count]] = {}
    for count in counts:
        by_workspace.setdefault(count.workspace_id, []).append(count)
    result = []
    for group in by_workspace.values():
        values = await quota.read([c.key for c in group])
        result += [replace(c, redis=v) for c, v in zip(group, values, strict=True)]
    return result


async def drift(pool: asyncpg.Pool, quota: QuotaStore, ch, workspace_id: int | None = None) -> list[Count]:
    """Every counter with its Redis and source values; `Count.drift` non-zero where they differ."""
    return await with_redis(quota, await expected(pool, ch, workspace_id, datetime.now(UTC)))


async def rebuild(pool: asyncpg.Pool, quota: QuotaStore, ch, workspace_id: int | None = None) -> list[Count]:
    """Set every drifting counter to its source value; returns those counters (`redis` as found).

    A missing counter whose source is 0 is left missing: quota.lua starts it from the same 0.
    """
    stale = [c for c in await drift(pool, quota, ch, workspace_id) if c.drift]
    await quota.overwrite({c.key: (c.source, c.expire_at) for c in stale})
    return stale


def table(counts: list[Count]) -> str:
    """A readable table of counters: workspace, feature, Redis value (- missing), source, drift."""
    rows = [("workspace", "feature", "redis", "source", "drift")]
    rows += [
        (str(c.workspace_id), c.feature, "-" if c.redis is None else str(c.redis), str(c.source), f"{c.drift:+d}")
        for c in counts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )
