"""HTTP: /api/v1/api-keys — keys of the caller's workspace: list, get, create, rotate, revoke.

No key hands out more than it holds: a key it creates, and a key it rotates or revokes, must lie
within its own scopes, its workspace's tier and its own expiry (a key may always rotate or
revoke itself).
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from blacksheep import Response

from app.access.scopes import DEFAULT_KEY_SCOPES, KNOWN, can_grant, grants
from app.access.tiers import TIERS, exceeds
from app.access.tokens import generate_key
from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, json_response
from app.http.listing import page_body, parse_list_query
from app.http.presenters import api_key_view, iso, workspace_view
from app.http.routing import Call, Route, path_id
from app.http.validation import Checker, Missing, present, required
from storage.postgres import api_keys

DEFAULT_GRACE_HOURS = 24
# A rotation window longer than a month means two live keys for too long.
MAX_GRACE_HOURS = 720


@dataclass(frozen=True, slots=True)
class Holder:
    """What the calling key holds, and so what it may hand out."""

    key_id: int
    scopes: frozenset[str]
    tier: str  # its workspace's tier: the plan, not the key's own rate_limit_tier
    expires_at: datetime | None


async def holder(call: Call) -> Holder:
    own = await api_keys.get_key(call.pool, call.principal.workspace_id, call.principal.key_id)
    workspace = await call.services.workspaces.get(call.principal.workspace_id)
    return Holder(own["id"], call.principal.scopes, workspace["tier"], own["expires_at"])


def view(call: Call, row: dict) -> dict:
    return api_key_view(row, call.services.authenticator.last_used(row["id"]))


def check_scopes(checker: Checker, held: frozenset[str]) -> list[str] | None:
    scopes = checker.string_list("scopes", max_items=len(KNOWN))
    if not present(scopes):
        return None
    for scope in scopes:
        if scope not in KNOWN:
            checker.fail("scopes", f"Unknown scope {scope!r}.")
        elif not can_grant(held, scope):
            checker.fail("scopes", f"This API key cannot grant {scope!r}, which it does not hold itself.")
    return sorted(set(scopes))


def check_tier(checker: Checker, tier: str | None | Missing, ceiling: str) -> None:
    if present(tier) and tier is not None and exceeds(tier, ceiling):
        checker.fail("rate_limit_tier", f"The rate_limit_tier may not be above the workspace's tier, {ceiling!r}.")


def check_expiry(checker: Checker, expires_at: datetime | None | Missing, ceiling: datetime | None) -> None:
    """A key that expires creates only keys that expire no later than it does."""
    if ceiling is None:
        return
    if not present(expires_at) or expires_at is None:
        checker.fail(
            "expires_at",
            f"This API key expires at {iso(ceiling)}, so the keys it creates must expire "
            "too: give an expires_at no later than that.",
        )
    elif expires_at > ceiling:
        checker.fail("expires_at", f"The expires_at may not be later than this API key's own expiry, {iso(ceiling)}.")


def why_not_held(held: Holder, target: dict) -> str | None:
    """Why the caller could not have created `target`, or None when it could (or it is itself)."""
    if target["id"] == held.key_id:
        return None
    for scope in target["scopes"]:
        if not can_grant(held.scopes, scope):
            return f"whose scopes include {scope!r} which it does not hold"
    if held.expires_at is not None and target["expires_at"] is None:
        return f"which never expires, while this key expires at {iso(held.expires_at)}"
    if held.expires_at is not None and target["expires_at"] > held.expires_at:
        return f"which expires at {iso(target['expires_at'])}, after this key ({iso(held.expires_at)})"
    return None


async def load_held_key(call: Call, action: str) -> tuple[dict, Holder]:
    """The key named by the path, if the caller could have created it; 404 or 403 otherwise."""
    target = await api_keys.get_key(call.pool, call.principal.workspace_id, path_id(call))
    held = await holder(call)
    reason = why_not_held(held, target)
    if reason is not None:
        raise AccessDenied(f"This API key cannot {action} key {target['id']}, {reason}.")
    return target, held


def successor_tier(target: dict, held: Holder) -> str | None:
    """The old key's tier, within the workspace's current plan (it may have been lowered since)."""
    tier = target["rate_limit_tier"]
    return held.tier if tier is not None and exceeds(tier, held.tier) else tier


async def list_api_keys(call: Call) -> Response:
    query = parse_list_query(call.request, api_keys.LISTING)
    rows, total = await api_keys.list_keys(call.pool, call.principal.workspace_id, query)
    items = [view(call, row) for row in rows]
    if "workspace" in query.include:
        workspace = workspace_view(await call.services.workspaces.get(call.principal.workspace_id))
        for item in items:
            item["workspace"] = workspace
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_api_key(call: Call) -> Response:
    row = await api_keys.get_key(call.pool, call.principal.workspace_id, path_id(call))
    return json_response(200, {"data": view(call, row)})


async def create_api_key(call: Call) -> Response:
    data = await read_json_object(call.request, call.settings.max_body_bytes)
    checker = Checker(data, allowed=("name", "scopes", "rate_limit_tier", "expires_at"))
    name = checker.string("name", required=True, max_len=255)
    scopes = check_scopes(checker, call.principal.scopes)
    tier = checker.choice("rate_limit_tier", TIERS, nullable=True)
    expires_at = checker.timestamp("expires_at")
    if present(expires_at) and expires_at is not None and expires_at <= datetime.now(UTC):
        checker.fail("expires_at", "The expires_at must be in the future.")
    held = await holder(call)
    check_tier(checker, tier, held.tier)
    check_expiry(checker, expires_at, held.expires_at)
    checker.done()
    if scopes is None:
        scopes = [s for s in DEFAULT_KEY_SCOPES if grants(call.principal.scopes, s)]
    key, prefix, key_hash = generate_key()
    row = await api_keys.create_key(
        call.pool,
        call.principal.workspace_id,
        required(name).strip(),
        prefix,
        key_hash,
        scopes,
        tier if present(tier) else None,
        expires_at if present(expires_at) else None,
    )
    return json_response(201, {"message": "API key created successfully.", "data": {**view(call, row), "key": key}})


async def rotate_api_key(call: Call) -> Response:
    data = await read_json_object(call.request, call.settings.max_body_bytes, required=False)
    checker = Checker(data, allowed=("grace_period_hours",))
    grace = checker.integer("grace_period_hours", minimum=0, maximum=MAX_GRACE_HOURS)
    checker.done()
    target, held = await load_held_key(call, "rotate")
    key, prefix, key_hash = generate_key()
    row, grace_ends, old_hash = await api_keys.rotate_key(
        call.pool,
        call.principal.workspace_id,
        target["id"],
        prefix,
        key_hash,
        grace if present(grace) else DEFAULT_GRACE_HOURS,
        successor_tier(target, held),
    )
    await call.services.authenticator.forget([old_hash])
    body = {**view(call, row), "key": key, "rotated_from_id": target["id"], "grace_period_ends_at": iso(grace_ends)}
    return json_response(200, {"message": "API key rotated successfully.", "data": body})


async def revoke_api_key(call: Call) -> Response:
    target, _ = await load_held_key(call, "revoke")
    revoked = await api_keys.revoke_key(call.pool, call.principal.workspace_id, target["id"])
    if revoked is not None:
        await call.services.authenticator.forget([revoked])
    return Response(204)


KEY_BODY = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 255},
        "scopes": {"type": "array", "items": {"type": "string", "enum": sorted(KNOWN)}},
        "rate_limit_tier": {
            "type": ["string", "null"],
            "enum": [*TIERS, None],
            "description": "At most the workspace's tier; null follows the workspace",
        },
        "expires_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "Required, and no later than its own, when the calling key expires",
        },
    },
}
ROTATE_BODY = {
    "type": "object",
    "properties": {"grace_period_hours": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_HOURS}},
}
LIST_QUERY = (
    "page",
    "per_page",
    "sort",
    "fields",
    "include",
    "search",
    "status",
    "rate_limit_tier",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
)
BASE = "/api/v1/api-keys"
ROUTES = [
    Route(
        "GET",
        BASE,
        list_api_keys,
        "api-keys:read",
        "List the workspace's API keys",
        "API keys",
        query=LIST_QUERY,
        errors=(422,),
    ),
    Route(
        "POST",
        BASE,
        create_api_key,
        "api-keys:write",
        "Create an API key (the key is shown once)",
        "API keys",
        status=201,
        body=KEY_BODY,
        errors=(422,),
    ),
    Route(
        "GET",
        BASE + "/{id}",
        get_api_key,
        "api-keys:read",
        "Get an API key (never the secret)",
        "API keys",
        errors=(404,),
    ),
    Route(
        "POST",
        BASE + "/{id}/rotate",
        rotate_api_key,
        "api-keys:write",
        "Rotate a key: a new key now, the old one lives for the grace period",
        "API keys",
        body=ROTATE_BODY,
        errors=(404, 409, 422),
    ),
    Route(
        "DELETE",
        BASE + "/{id}",
        revoke_api_key,
        "api-keys:delete",
        "Revoke a key at once",
        "API keys",
        status=204,
        errors=(404,),
    ),
]
