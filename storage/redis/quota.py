"""Entitlement counters in Redis: atomic check-and-increment (quota.lua beside it), reads, rebuilds.

Requirements: never let a counter pass its limit under any concurrency (one script decides
and changes); count a client's event id once; fail closed, so every Redis error leaves as
`Unavailable` and the caller refuses rather than grants. All keys of a workspace share one
hash tag, so a summary reads every counter with one MGET, Cluster or not.
"""

import enum
import hashlib
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from storage.errors import Unavailable
from storage.redis.scripts import Script


class QuotaStatus(enum.IntEnum):
    """What a consume did; the values are the codes quota.lua answers with."""

    REFUSED = 0  # past the limit: nothing counted
    ACCEPTED = 1  # counted
    DUPLICATE = 2  # this event id was counted already: `used` is what the first call answered
    MISSING = 3  # no counter and no `start_from`: rebuild it, then call again


@dataclass(frozen=True, slots=True)
class Outcome:
    status: QuotaStatus
    used: int  # the counter after the call (for DUPLICATE: what the first call answered)
    applied: int  # what was added; differs from the quantity when a release stops at 0


def counter_key(workspace_id: int, feature: str, period: str | None = None) -> str:
    # The braces are a hash tag: every counter of a workspace maps to one Cluster slot.
    key = f"sluice:quota:{{ws:{workspace_id}}}:{feature}"
    return f"{key}:{period}" if period else key


def marker_key(workspace_id: int, feature: str, event_id: str) -> str:
    # Hashed, so a client's id never shapes the key name.
    return f"sluice:quota:{{ws:{workspace_id}}}:{feature}:event:{hashlib.sha256(event_id.encode()).hexdigest()}"


class QuotaStore:
    def __init__(self, client: redis.Redis):
        self.client = client
        self.script = Script(client, "quota.lua")

    async def consume(
        self,
        counter: str,
        marker: str | None,
        quantity: int,
        limit: int,
        *,
        start_from: int | None,
        expire_at: int,
        marker_ttl: int,
    ) -> Outcome:
        """Add `quantity` unless that passes `limit`. A missing counter starts from `start_from`;
        None answers QuotaStatus.MISSING instead. `expire_at` 0: never expires."""
        keys = [counter] + ([marker] if marker else [])
        args = ["consume", quantity, limit, "" if start_from is None else start_from, expire_at, marker_ttl]
        status, used, applied = await self._run(self.script(keys, args))
        return Outcome(QuotaStatus(int(status)), int(used), int(applied))

    async def release(self, counter: str, marker: str | None, applied: int) -> int:
        """Take back what a consume applied, and forget its event id; returns the counter."""
        keys = [counter] + ([marker] if marker else [])
        return int(await self._run(self.script(keys, ["release", applied])))

    async def read(self, counters: list[str]) -> list[int | None]:
        """The counters in one round trip; None where one does not exist."""
        values = await self._run(self.client.mget(counters))
        return [None if v is None else int(v) for v in values]

    async def rebuild(self, counters: dict[str, int]) -> dict[str, int]:
        """Set missing counters to values read from Postgres (existing ones are kept); the values now."""
        async with self.client.pipeline(transaction=False) as pipe:
            for counter, value in counters.items():
                pipe.set(counter, value, nx=True)
                pipe.get(counter)
            replies = await self._run(pipe.execute())
        return {counter: int(value) for counter, value in zip(counters, replies[1::2], strict=True)}

    async def overwrite(self, counters: dict[str, tuple[int, int]]) -> None:
        """Set counters outright: key → (value, unix expiry; 0 never), as `consume` leaves them."""
        async with self.client.pipeline(transaction=False) as pipe:
            for counter, (value, expire_at) in counters.items():
                pipe.set(counter, value, exat=expire_at or None)
            await self._run(pipe.execute())

    async def _run(self, pending):
        try:
            return await pending
        except (RedisError, OSError) as exc:
            raise Unavailable("Redis", str(exc)) from exc
