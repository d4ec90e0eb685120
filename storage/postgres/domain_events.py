"""The catalogue of Sluice's domain events and the payload of each, built from stored rows.

Repositories write these into the outbox (storage/postgres/outbox.py) inside the transaction of
the change; the webhook dispatcher sends them. It lives in storage because the repositories
that emit events may not import from app/ or ingest/; app/resources/webhooks.py reads the catalogue to
validate subscriptions and to document it.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

ACCOUNT = "account"  # heard by the endpoints of every workspace of the account
WORKSPACE = "workspace"  # heard by the endpoints of the workspace it concerns


@dataclass(frozen=True)
class EventType:
    name: str
    audience: str
    description: str
    example: dict


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


WHEN = "2026-01-15T10:30:00Z"
_WORKSPACE = {
    "id": 12,
    "name": "Acme",
    "slug": "acme",
    "tier": "pro",
    "account_id": 3,
    "settings": {"timezone": "UTC", "locale": "en_GB"},
    "created_at": WHEN,
    "updated_at": WHEN,
}
_KEY = {
    "id": 7,
    "workspace_id": 12,
    "name": "CI",
    "prefix": "sk_live_ab12",
    "scopes": ["posts:read"],
    "rate_limit_tier": "pro",
    "expires_at": None,
    "created_at": WHEN,
}
CATALOGUE: dict[str, EventType] = {
    e.name: e
    for e in (
        EventType("workspace.created", ACCOUNT, "A workspace was created in the account.", _WORKSPACE),
        EventType("workspace.updated", ACCOUNT, "A workspace's name, slug, tier or settings changed.", _WORKSPACE),
        EventType(
            "workspace.deleted",
            ACCOUNT,
            "A workspace and everything in it was deleted.",
            {"id": 12, "name": "Acme", "slug": "acme", "account_id": 3, "deleted_at": WHEN},
        ),
        EventType("api_key.created", WORKSPACE, "An API key was created (never the key itself).", _KEY),
        EventType(
            "api_key.rotated",
            WORKSPACE,
            "A key was rotated: its successor, and when the old one stops.",
            {"id": 7, "rotated_to": {**_KEY, "id": 8}, "grace_period_ends_at": WHEN},
        ),
        EventType(
            "api_key.revoked",
            WORKSPACE,
            "An API key was revoked.",
            {"id": 7, "workspace_id": 12, "name": "CI", "prefix": "sk_live_ab12", "revoked_at": WHEN},
        ),
        EventType(
            "webhook.test",
            WORKSPACE,
            "Sent by POST /webhooks/{id}/test to that endpoint only.",
            {"webhook_id": 2, "message": "This is a test event from Sluice."},
        ),
        EventType(
            "webhook.disabled",
            WORKSPACE,
            "An endpoint was disabled: it answered 410 Gone, or kept failing.",
            {
                "id": 2,
                "url": "https://example.com/hooks",
                "reason": "consecutive_failures",
                "consecutive_failures": 10,
                "failing_since": WHEN,
                "disabled_at": WHEN,
            },
        ),
        EventType(
            "seo.report.created",
            WORKSPACE,
            "An SEO report was submitted.",
            {
                "id": 31,
                "workspace_id": 12,
                "url": "https://example.com/",
                "scores": {"performance": 85, "accessibility": 92, "best_practices": 88, "seo": 95},
                "issue_count": 2,
                "created_at": WHEN,
            },
        ),
        EventType(
            "entitlement.limit_reached",
            WORKSPACE,
            "Usage of a feature was refused at its limit (once per feature and billing period).",
            {"feature": "api_calls", "used": 10000, "limit": 10000, "period": "2026-01", "reset_at": WHEN},
        ),
        EventType(
            "pixel_domain.verification_lost",
            WORKSPACE,
            "Another workspace verified a host this workspace had verified; its pixel events now go there.",
            {"id": 5, "host": "shop.example.com", "lost_at": WHEN},
        ),
    )
}


def matches(patterns: list[str], event_type: str) -> bool:
    """`*` matches everything, `post.*` every type under `post.`, anything else itself."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def workspace_payload(row: dict) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "slug": row["slug"],
        "tier": row["tier"],
        "account_id": row["account_id"],
        "settings": {"timezone": "UTC", "locale": "en_GB", **row["settings"]},
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def workspace_deleted_payload(row: dict, deleted_at: datetime) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "slug": row["slug"],
        "account_id": row["account_id"],
        "deleted_at": _iso(deleted_at),
    }


def api_key_payload(row: dict) -> dict:
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": list(row["scopes"]),
        "rate_limit_tier": row["rate_limit_tier"],
        "expires_at": _iso(row["expires_at"]),
        "created_at": _iso(row["created_at"]),
    }


def api_key_rotated_payload(old_id: int, new_row: dict, grace_ends: datetime) -> dict:
    return {"id": old_id, "rotated_to": api_key_payload(new_row), "grace_period_ends_at": _iso(grace_ends)}


def api_key_revoked_payload(row: dict) -> dict:
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "revoked_at": _iso(row["revoked_at"]),
    }


def webhook_disabled_payload(row: dict, reason: str, disabled_at: datetime) -> dict:
    return {
        "id": row["id"],
        "url": row["url"],
        "reason": reason,
        "consecutive_failures": row["consecutive_failures"],
        "failing_since": _iso(row["failing_since"]),
        "disabled_at": _iso(disabled_at),
    }


def seo_report_payload(report: dict) -> dict:
    scores = {name: report[name] for name in ("performance", "accessibility", "best_practices", "seo")}
    return {
        "id": report["id"],
        "workspace_id": report["workspace_id"],
        "url": report["url"],
        "scores": scores,
        "issue_count": report["issue_count"],
        "created_at": _iso(report["created_at"]),
    }


def limit_reached_payload(feature: str, used: int, limit: int, period: str, reset_at: datetime | None) -> dict:
    return {"feature": feature, "used": used, "limit": limit, "period": period, "reset_at": _iso(reset_at)}


def verification_lost_payload(row: dict) -> dict:
    return {"id": row["id"], "host": row["host"], "lost_at": _iso(row["verification_lost_at"])}


def envelope(event_id: str, event_type: str, workspace_id: int, created_at: datetime, data: dict) -> dict:
    """What a receiver gets: the Standard Webhooks shape (type, timestamp, data) plus ids."""
    return {
        "id": event_id,
        "type": event_type,
        "timestamp": _iso(created_at),
        "workspace_id": workspace_id,
        "data": data,
    }
