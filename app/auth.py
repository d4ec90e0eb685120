"""Who is calling: the Bearer key looked up by hash, its scopes, its workspace.

`last_used_at` is kept in memory and written in one UPDATE every few seconds, so a
busy key costs no Postgres write per request.
"""

import asyncio
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from app.errors import AccessDenied, Unauthorized, ValidationFailed
from app.scopes import grants
from app.tokens import hash_key, looks_like_key
from storage.postgres import api_keys

log = logging.getLogger("sluice.auth")


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


def is_live(row: dict, now: datetime) -> bool:
    if row["revoked_at"] is not None and row["revoked_at"] <= now:
        return False
    return row["expires_at"] is None or row["expires_at"] > now


class Authenticator:
    def __init__(self, pool, flush_seconds: int):
        self.pool = pool
        self.flush_seconds = flush_seconds
        self.pending_last_used: dict[int, datetime] = {}
        self._task: asyncio.Task | None = None

    async def authenticate(self, request) -> Principal:
        token = bearer_token(request)
        digest = hash_key(token)
        row = await api_keys.find_by_hash(self.pool, digest)
        # The lookup is by hash; comparing the hash again in constant time keeps the
        # final decision free of timing differences whatever the index does.
        if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
            raise Unauthorized()
        now = datetime.now(timezone.utc)
        if not is_live(row, now):
            raise Unauthorized("API key expired or revoked.")
        self.pending_last_used[row["id"]] = now
        return Principal(
            key_id=row["id"],
            workspace_id=row["workspace_id"],
            account_id=row["account_id"],
            scopes=frozenset(row["scopes"]),
            tier=row["rate_limit_tier"] or row["workspace_tier"],
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()

    async def flush(self) -> None:
        pending, self.pending_last_used = self.pending_last_used, {}
        try:
            await api_keys.touch_last_used(self.pool, pending)
        except Exception:  # noqa: BLE001 - losing a last_used_at update must not kill the loop
            log.warning("could not record last_used_at for %d keys", len(pending), exc_info=True)

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
    if not raw.isdigit() or len(raw) > 18:
        raise ValidationFailed({"X-Workspace-ID": ["The X-Workspace-ID header must be a workspace id."]})
    if int(raw) != principal.workspace_id:
        raise AccessDenied(f"This API key cannot act on workspace {int(raw)}.")
