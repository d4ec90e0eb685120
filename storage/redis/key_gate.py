"""API key records cached in Redis, read together with the key's rate limit in one round trip.

Postgres stays the source of truth: a record is written after a Postgres lookup and
expires after RECORD_TTL_SECONDS; revocation, rotation and tier changes delete it.
"""

from dataclasses import dataclass

import redis.asyncio as redis
from redis.typing import EncodableT, FieldT

from storage.redis.rate_limit import Decision, decision_from
from storage.redis.scripts import Script

# Bounds how long a record can outlive a change whose deletion did not reach Redis.
RECORD_TTL_SECONDS = 60
# Parsed records by their raw fields: the same few keys call again and again, and parsing nine
# fields into a KeyRecord was a twentieth of an authenticated GET's CPU.
PARSED_MAX = 10_000
FIELDS = ("id", "workspace_id", "account_id", "scopes", "tier", "expires_at", "revoked_at", "limit", "capacity")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    workspace_id: int
    account_id: int
    scopes: tuple[str, ...]
    tier: str
    expires_at: float | None  # unix seconds
    revoked_at: float | None
    limit: int
    capacity: int


def _keys(key_hash: bytes) -> list[str]:
    tag = key_hash.hex()
    return [f"sluice:key:{{k:{tag}}}", f"sluice:rl:{{k:{tag}}}"]


def _time(raw: bytes) -> float | None:
    return float(raw) if raw else None


def _parse(f: tuple) -> KeyRecord:
    return KeyRecord(
        id=int(f[0]),
        workspace_id=int(f[1]),
        account_id=int(f[2]),
        scopes=tuple(s for s in f[3].decode().split(" ") if s),
        tier=f[4].decode(),
        expires_at=_time(f[5]),
        revoked_at=_time(f[6]),
        limit=int(f[7]),
        capacity=int(f[8]),
    )


class KeyGate:
    def __init__(self, client: redis.Redis, limit: bool = True):
        self.client = client
        self.script = Script(client, "gcra.lua", "key_gate.lua")
        self.limit_flag = "1" if limit else "0"
        self._parsed: dict[tuple, KeyRecord] = {}

    async def check(self, key_hash: bytes) -> tuple[KeyRecord, Decision] | None:
        """The cached record and the rate-limit decision, or None when not cached."""
        result = await self.script(_keys(key_hash), [self.limit_flag])
        if not int(result[0]):
            return None
        fields = tuple(result[1:10])
        record = self._parsed.get(fields)
        if record is None:
            record = _parse(fields)
            if len(self._parsed) >= PARSED_MAX:
                self._parsed.clear()
            self._parsed[fields] = record
        return record, decision_from(record.limit, record.capacity, result[10:14])

    async def remember(self, key_hash: bytes, record: KeyRecord) -> None:
        key = _keys(key_hash)[0]
        mapping: dict[FieldT, EncodableT] = {
            "id": record.id,
            "workspace_id": record.workspace_id,
            "account_id": record.account_id,
            "scopes": " ".join(record.scopes),
            "tier": record.tier,
            "expires_at": "" if record.expires_at is None else repr(record.expires_at),
            "revoked_at": "" if record.revoked_at is None else repr(record.revoked_at),
            "limit": record.limit,
            "capacity": record.capacity,
        }
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, RECORD_TTL_SECONDS)
            await pipe.execute()

    async def forget(self, key_hashes: list[bytes]) -> None:
        # One DEL per key: keys in different hash slots may not share a command in a Cluster.
        async with self.client.pipeline(transaction=False) as pipe:
            for key_hash in key_hashes:
                pipe.delete(_keys(key_hash)[0])
            await pipe.execute()
