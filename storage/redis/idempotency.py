"""Idempotency records in Redis (idempotency.lua beside it): begin, complete, abandon.

Requirements: under any concurrency only one request per key runs (begin is one atomic
script); a worker that dies mid-request blocks its key for IN_PROGRESS_TTL_MS at most; a
request never overwrites or deletes a record it no longer owns (a random token written by
begin is checked by complete and abandon); Redis errors leave as `Unavailable`.
"""

import enum
import hashlib
import os
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from storage.errors import Unavailable
from storage.redis.scripts import Script

# Far longer than a handler takes (a few Postgres statements, milliseconds each), and short
# enough that the key of a request whose worker crashed frees itself within a minute.
IN_PROGRESS_TTL_MS = 60_000


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    content_type: bytes  # b"" when the response has no body
    body: bytes


class BeginOutcome(enum.StrEnum):
    """What begin found; the values are the words idempotency.lua answers with."""

    RUN = "run"  # the caller owns the key now: run the request
    MISMATCH = "mismatch"  # the key was used with a different request
    IN_PROGRESS = "in_progress"  # the first request with this key is still running
    REPLAY = "replay"  # finished before: answer what it answered


@dataclass(frozen=True, slots=True)
class Begun:
    outcome: BeginOutcome
    token: str = ""
    stored: StoredResponse | None = None  # set for REPLAY


def record_key(key_id: int, idempotency_key: bytes) -> str:
    # Hashed, so a client's key (any printable ASCII) never shapes the Redis key name;
    # the braces are a hash tag: one Cluster slot per record.
    return f"sluice:idem:{{{key_id}:{hashlib.sha256(idempotency_key).hexdigest()}}}"


class IdempotencyStore:
    def __init__(self, client: redis.Redis):
        self.client = client
        self.script = Script(client, "idempotency.lua")

    async def begin(self, key: str, fingerprint: str) -> Begun:
        token = os.urandom(16).hex()
        result = await self._run(key, "begin", fingerprint, token, IN_PROGRESS_TTL_MS)
        outcome = BeginOutcome(result[0].decode())
        if outcome is not BeginOutcome.REPLAY:
            return Begun(outcome, token)
        return Begun(outcome, token, StoredResponse(int(result[1]), result[2], result[3]))

    async def complete(self, key: str, token: str, response: StoredResponse, ttl_seconds: int) -> bool:
        """Keep the answer for ttl_seconds; False when the record is no longer this request's."""
        args = ("complete", token, response.status, response.content_type, response.body, ttl_seconds)
        return bool(await self._run(key, *args))

    async def abandon(self, key: str, token: str) -> bool:
        """Free the key so a retry runs again; False when the record is no longer this request's."""
        return bool(await self._run(key, "abandon", token))

    async def _run(self, key: str, *args):
        try:
            return await self.script([key], list(args))
        except (RedisError, OSError) as exc:
            raise Unavailable("Redis", str(exc)) from exc
