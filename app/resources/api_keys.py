"""HTTP: /api/v1/api-keys — keys of the caller's workspace: list, get, create, rotate, revoke.

No key hands out more than it holds: a key it creates, and a key it rotates or revokes, must lie
within its own scopes, its workspace's tier and its own expiry (a key may always rotate or
revoke itself). Those rules, and an expires_at in the future, are checked after the body's shape
and answered with it, every bad field at once. A key is shown with the rate_limit_tier that
applies to it: its own within its workspace's, or the workspace's when it has none.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from blacksheep import Response

from app.access.scopes import DEFAULT_KEY_SCOPES, KNOWN, can_grant, grants
from app.access.tiers import TIERS, exceeds
from app.access.tokens import DISPLAY_PREFIX_LENGTH, KEY_PREFIX, SECRET_LENGTH, generate_key
from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, ValidationFailed, json_response
from app.http.listing import page_answer, page_body, parse_list_query
from app.http.presenters import KEY_STATUSES, api_key_view, iso, workspace_view
from app.http.routing import Call, Route, path_id
from app.http.shapes import (
    Boolean,
    Choice,
    DateTime,
    Errors,
    Field,
    Integer,
    List,
    Nullable,
    Object,
    Text,
    fail,
    response,
)
from app.http.validation import ID_MAX, LATEST, Missing
from app.resources.workspaces import WORKSPACE
from storage.postgres import api_keys

DEFAULT_GRACE_HOURS = 24
# A rotation window longer than a month means two live keys for too long.
MAX_GRACE_HOURS = 720
# asyncpg writes the largest datetime (LATEST, where parse_datetime clamps) as Postgres' 'infinity'
# and reads that back without a time zone: a key expires at most a microsecond before it.
EXPIRY_MAX = LATEST - timedelta(microseconds=1)


class Scope(Choice):
    """A scope of the catalogue (app/access/scopes.py), named in its own message."""

    def read(self, value: Any, name: str, errors: Errors) -> str | Missing:
        if not isinstance(value, str) or value not in self.allowed:
            return fail(errors, name, f"Unknown scope {value!r}.")
        return value


ID = Integer(1, ID_MAX)
SCOPES = List(
    Scope(sorted(KNOWN)),
    max_items=len(KNOWN),
    description="Only scopes the calling key holds itself (422 otherwise); default: every read and write "
    "scope it holds. Duplicates count once.",
)
CREATE_BODY = Object(
    {
        "name": Text(255, description="Leading and trailing whitespace is dropped"),
        "scopes": SCOPES,
        "rate_limit_tier": Nullable(
            Choice(TIERS),
            description="At most the workspace's tier (422 above it); absent or null follows the workspace's tier",
        ),
        "expires_at": Nullable(
            DateTime(),
            description="In the future (422 otherwise); null or absent: never. When the calling key expires, "
            "required and no later than its own expiry (422 otherwise)",
        ),
    },
    required=("name",),
)
ROTATE_BODY = Object(
    {
        "grace_period_hours": Integer(
            0, MAX_GRACE_HOURS, description=f"Hours the old key keeps working (default {DEFAULT_GRACE_HOURS})"
        )
    }
)

# The answers: a key as app/http/presenters.py api_key_view() shows it.
KEY_FIELDS: dict[str, Field] = {
    "id": ID,
    "workspace_id": ID,
    "name": Text(255),
    "prefix": Text(DISPLAY_PREFIX_LENGTH, f"{KEY_PREFIX}[A-Za-z0-9]{{{DISPLAY_PREFIX_LENGTH - len(KEY_PREFIX)}}}"),
    "scopes": List(Choice(sorted(KNOWN)), max_items=len(KNOWN)),
    "rate_limit_tier": Choice(TIERS, description="The tier that applies: the key's own within its workspace's"),
    "status": Choice(KEY_STATUSES),
    "last_used_at": Nullable(DateTime()),
    "expires_at": Nullable(DateTime()),
    "grace_period_ends_at": DateTime(description="Only while the key is rotating: when it stops working"),
    "created_at": DateTime(),
    "updated_at": DateTime(),
}
# The key is shown once: a replay of the answer (Idempotent-Replayed, app/http/idempotency.py) has
# it null and says so with secret_redacted.
SECRET = Nullable(
    Text(len(KEY_PREFIX) + SECRET_LENGTH, f"{KEY_PREFIX}[A-Za-z0-9]{{{SECRET_LENGTH}}}"),
    description="The key itself, shown only in this answer: null in a replay of it",
)
REDACTED = {"secret_redacted": Boolean(description="Present (true) in a replay, whose key is null")}
SHOWN = tuple(name for name in KEY_FIELDS if name != "grace_period_ends_at")
KEY = Object(KEY_FIELDS, required=SHOWN)
NEW_KEY = Object({**KEY_FIELDS, "key": SECRET, **REDACTED}, required=(*SHOWN, "key"))
ROTATED_KEY = Object(
    {
        **KEY_FIELDS,
        "key": SECRET,
        "rotated_from_id": ID,
        "grace_period_ends_at": DateTime(description="When the old key stops working"),
        **REDACTED,
    },
    required=(*KEY_FIELDS, "key", "rotated_from_id"),
)


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


def view(call: Call, row: dict, workspace_tier: str) -> dict:
    return api_key_view(row, workspace_tier, call.services.authenticator.last_used(row["id"]))


def check_scopes(errors: Errors, scopes: list[str], held: frozenset[str]) -> None:
    for scope in scopes:
        if not can_grant(held, scope):
            fail(errors, "scopes", f"This API key cannot grant {scope!r}, which it does not hold itself.")


def check_tier(errors: Errors, tier: str | None, ceiling: str) -> None:
    if tier is not None and exceeds(tier, ceiling):
        fail(errors, "rate_limit_tier", f"The rate_limit_tier may not be above the workspace's tier, {ceiling!r}.")


def check_expiry(errors: Errors, body: dict, ceiling: datetime | None) -> None:
    """In the future; and a key that expires creates only keys that expire no later than it does."""
    expires_at = body.get("expires_at")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        fail(errors, "expires_at", "The expires_at must be in the future.")
    if ceiling is None or "expires_at" in errors:
        return
    if expires_at is None:
        fail(
            errors,
            "expires_at",
            f"This API key expires at {iso(ceiling)}, so the keys it creates must expire "
            "too: give an expires_at no later than that.",
        )
    elif expires_at > ceiling:
        fail(errors, "expires_at", f"The expires_at may not be later than this API key's own expiry, {iso(ceiling)}.")


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


async def workspace_tier(call: Call) -> str:
    return (await call.services.workspaces.get(call.principal.workspace_id))["tier"]


async def list_api_keys(call: Call) -> Response:
    query = parse_list_query(call.request, api_keys.LISTING)
    rows, total = await api_keys.list_keys(call.pool, call.principal.workspace_id, query)
    workspace = await call.services.workspaces.get(call.principal.workspace_id)
    items = [view(call, row, workspace["tier"]) for row in rows]
    if "workspace" in query.include:
        shown = workspace_view(workspace)
        for item in items:
            item["workspace"] = shown
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_api_key(call: Call) -> Response:
    row = await api_keys.get_key(call.pool, call.principal.workspace_id, path_id(call))
    return json_response(200, {"data": view(call, row, await workspace_tier(call))})


async def create_api_key(call: Call) -> Response:
    data = await read_json_object(call.request, call.settings.max_body_bytes)
    # The shape's errors and the rules after it are answered together, every bad field at once.
    errors: Errors = {}
    body = CREATE_BODY.read(data, "", errors)
    if not isinstance(body, dict):
        raise ValidationFailed(errors)
    held = await holder(call)
    check_scopes(errors, body.get("scopes", []), held.scopes)
    check_tier(errors, body.get("rate_limit_tier"), held.tier)
    check_expiry(errors, body, held.expires_at)
    if errors:
        raise ValidationFailed(errors)
    expires_at = body.get("expires_at")
    if "scopes" in body:
        scopes = sorted(set(body["scopes"]))
    else:
        scopes = [s for s in DEFAULT_KEY_SCOPES if grants(held.scopes, s)]
    key, prefix, key_hash = generate_key()
    row = await api_keys.create_key(
        call.pool,
        call.principal.workspace_id,
        body["name"].strip(),
        prefix,
        key_hash,
        scopes,
        body.get("rate_limit_tier"),
        None if expires_at is None else min(expires_at, EXPIRY_MAX),
    )
    answer = {**view(call, row, held.tier), "key": key}
    return json_response(201, {"message": "API key created successfully.", "data": answer})


async def rotate_api_key(call: Call) -> Response:
    body = ROTATE_BODY.parse(await read_json_object(call.request, call.settings.max_body_bytes, required=False))
    target, held = await load_held_key(call, "rotate")
    key, prefix, key_hash = generate_key()
    row, grace_ends, old_hash = await api_keys.rotate_key(
        call.pool,
        call.principal.workspace_id,
        target["id"],
        prefix,
        key_hash,
        body.get("grace_period_hours", DEFAULT_GRACE_HOURS),
        successor_tier(target, held),
    )
    await call.services.authenticator.forget([old_hash])
    answer = {
        **view(call, row, held.tier),
        "key": key,
        "rotated_from_id": target["id"],
        "grace_period_ends_at": iso(grace_ends),
    }
    return json_response(200, {"message": "API key rotated successfully.", "data": answer})


async def revoke_api_key(call: Call) -> Response:
    target, _ = await load_held_key(call, "revoke")
    revoked = await api_keys.revoke_key(call.pool, call.principal.workspace_id, target["id"])
    if revoked is not None:
        await call.services.authenticator.forget([revoked])
    return Response(204)


def key_answer(message: str, key: Object) -> dict:
    return response({"message": Choice([message]), "data": key})


BASE = "/api/v1/api-keys"
ROUTES = [
    Route(
        "GET",
        BASE,
        list_api_keys,
        "api-keys:read",
        "List the workspace's API keys",
        "API keys",
        listing=api_keys.LISTING,
        answer=page_answer(response({**KEY_FIELDS, "workspace": WORKSPACE}, required=())),
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
        body=CREATE_BODY,
        answer=key_answer("API key created successfully.", NEW_KEY),
        errors=(422,),
    ),
    Route(
        "GET",
        BASE + "/{id}",
        get_api_key,
        "api-keys:read",
        "Get an API key (never the secret)",
        "API keys",
        answer=response({"data": KEY}),
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
        body_required=False,
        answer=key_answer("API key rotated successfully.", ROTATED_KEY),
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
