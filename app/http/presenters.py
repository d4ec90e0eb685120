"""Rows to the spec's JSON shapes: timestamps in UTC with Z, secrets never included."""

from datetime import UTC, datetime
from functools import lru_cache
from typing import overload

from app.access.tiers import capped

DEFAULT_SETTINGS = {"timezone": "UTC", "locale": "en_GB"}


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
@lru_cache(maxsize=16_384)  # the same created_at/updated_at are presented over and over
def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def workspace_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "slug": row["slug"],
        "tier": row["tier"],
        "account_id": row["account_id"],
        "settings": {**DEFAULT_SETTINGS, **row["settings"]},
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


KEY_STATUSES = ("active", "rotating", "expired", "revoked")


def key_status(row: dict, now: datetime) -> str:
    revoked_at, expires_at = row["revoked_at"], row["expires_at"]
    if revoked_at is not None and revoked_at <= now:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "rotating" if revoked_at is not None else "active"


def api_key_view(row: dict, workspace_tier: str, last_used: datetime | None = None) -> dict:
    """The public view of a key; `last_used` is this process's not yet written value. Its
    rate_limit_tier is the one that applies: its own within its workspace's, else the workspace's."""
    now = datetime.now(UTC)
    status = key_status(row, now)
    used = max(filter(None, (row["last_used_at"], last_used)), default=None)
    view = {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": list(row["scopes"]),
        "rate_limit_tier": capped(row["rate_limit_tier"], workspace_tier),
        "status": status,
        "last_used_at": iso(used),
        "expires_at": iso(row["expires_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
    if status == "rotating":
        view["grace_period_ends_at"] = iso(row["revoked_at"])
    return view
