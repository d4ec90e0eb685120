"""HTTP: /api/v1/api-keys — keys of the caller's workspace: list, get, create, rotate, revoke."""

from datetime import datetime, timezone

from blacksheep import Response

from app.bodies import read_json_object
from app.errors import json_response
from app.listing import page_body, parse_list_query
from app.presenters import api_key_view, iso, workspace_view
from app.routing import Call, Route, path_id
from app.scopes import DEFAULT_KEY_SCOPES, KNOWN, can_grant, grants
from app.tokens import generate_key
from app.validation import Checker, present
from app.workspaces import TIERS
from storage.postgres import api_keys

DEFAULT_GRACE_HOURS = 24
# A rotation window longer than a month means two live keys for too long.
MAX_GRACE_HOURS = 720


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
    if present(expires_at) and expires_at is not None and expires_at <= datetime.now(timezone.utc):
        checker.fail("expires_at", "The expires_at must be in the future.")
    checker.done()
    if scopes is None:
        scopes = [s for s in DEFAULT_KEY_SCOPES if grants(call.principal.scopes, s)]
    key, prefix, key_hash = generate_key()
    row = await api_keys.create_key(
        call.pool, call.principal.workspace_id, name.strip(), prefix, key_hash, scopes,
        tier if present(tier) else None, expires_at if present(expires_at) else None,
    )
    return json_response(201, {"message": "API key created successfully.", "data": {**view(call, row), "key": key}})


async def rotate_api_key(call: Call) -> Response:
    data = await read_json_object(call.request, call.settings.max_body_bytes, required=False)
    checker = Checker(data, allowed=("grace_period_hours",))
    grace = checker.integer("grace_period_hours", minimum=0, maximum=MAX_GRACE_HOURS)
    checker.done()
    key, prefix, key_hash = generate_key()
    row, grace_ends, old_hash = await api_keys.rotate_key(
        call.pool, call.principal.workspace_id, path_id(call), prefix, key_hash,
        grace if present(grace) else DEFAULT_GRACE_HOURS,
    )
    await call.services.authenticator.forget([old_hash])
    body = {**view(call, row), "key": key, "rotated_from_id": path_id(call), "grace_period_ends_at": iso(grace_ends)}
    return json_response(200, {"message": "API key rotated successfully.", "data": body})


async def revoke_api_key(call: Call) -> Response:
    revoked = await api_keys.revoke_key(call.pool, call.principal.workspace_id, path_id(call))
    if revoked is not None:
        await call.services.authenticator.forget([revoked])
    return Response(204)


KEY_BODY = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 255},
        "scopes": {"type": "array", "items": {"type": "string", "enum": sorted(KNOWN)}},
        "rate_limit_tier": {"type": ["string", "null"], "enum": [*TIERS, None]},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
ROTATE_BODY = {
    "type": "object",
    "properties": {"grace_period_hours": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE_HOURS}},
}
LIST_QUERY = ("page", "per_page", "sort", "fields", "include", "search", "status", "rate_limit_tier",
              "created_after", "created_before", "updated_after", "updated_before")
BASE = "/api/v1/api-keys"
ROUTES = [
    Route("GET", BASE, list_api_keys, "api-keys:read", "List the workspace's API keys", "API keys",
          query=LIST_QUERY, errors=(422,)),
    Route("POST", BASE, create_api_key, "api-keys:write", "Create an API key (the key is shown once)",
          "API keys", status=201, body=KEY_BODY, errors=(422,)),
    Route("GET", BASE + "/{id}", get_api_key, "api-keys:read", "Get an API key (never the secret)",
          "API keys", errors=(404,)),
    Route("POST", BASE + "/{id}/rotate", rotate_api_key, "api-keys:write",
          "Rotate a key: a new key now, the old one lives for the grace period", "API keys",
          body=ROTATE_BODY, errors=(404, 409, 422)),
    Route("DELETE", BASE + "/{id}", revoke_api_key, "api-keys:delete", "Revoke a key at once", "API keys",
          status=204, errors=(404,)),
]
