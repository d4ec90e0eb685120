"""HTTP: /api/v1/workspaces — list, get, create, update, delete within the key's account."""

import re
import unicodedata
import zoneinfo
from functools import lru_cache
from typing import Any

from blacksheep import Response

from app.access.tiers import TIERS, exceeds
from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, json_response
from app.http.listing import page_body, parse_list_query
from app.http.presenters import iso, workspace_view
from app.http.routing import Call, Route, path_id
from app.http.validation import Checker, Missing, present, required
from storage.postgres import api_keys, workspaces

SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
LOCALE = re.compile(r"[a-z]{2,3}(?:[_-][A-Z]{2}|[_-][A-Z][a-z]{3})?")
SLUG_MAX = 100
SETTINGS_KEYS = ("timezone", "locale")


@lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:80].strip("-")
    return slug or "workspace"


def check_settings(checker: Checker) -> dict[str, Any]:
    settings = checker.object("settings")
    if not present(settings):
        return {}
    for key, value in settings.items():
        name = f"settings.{key}"
        if key not in SETTINGS_KEYS:
            checker.fail(name, f"Unknown setting; allowed: {', '.join(SETTINGS_KEYS)}.")
        elif value is None:
            continue  # null resets the setting to its default
        elif key == "timezone" and (not isinstance(value, str) or value not in known_timezones()):
            checker.fail(name, "The timezone must be an IANA time zone name, e.g. Europe/London.")
        elif key == "locale" and (not isinstance(value, str) or not LOCALE.fullmatch(value)):
            checker.fail(name, "The locale must look like en_GB or fr.")
    return settings


async def load_accessible(call: Call) -> dict:
    workspace = await call.services.workspaces.get(path_id(call))
    if workspace["account_id"] != call.principal.account_id:
        raise AccessDenied(f"This API key cannot act on workspace {workspace['id']}.")
    return workspace


async def list_workspaces(call: Call) -> Response:
    query = parse_list_query(call.request, workspaces.LISTING)
    rows, total = await workspaces.list_workspaces(call.pool, call.principal.account_id, query)
    items = [workspace_view(row) for row in rows]
    if "account" in query.include:
        accounts = await workspaces.get_accounts(call.pool, list({r["account_id"] for r in rows}))
        for item, row in zip(items, rows, strict=True):
            account = accounts[row["account_id"]]
            item["account"] = {"id": account["id"], "name": account["name"], "created_at": iso(account["created_at"])}
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_workspace(call: Call) -> Response:
    return json_response(200, {"data": workspace_view(await load_accessible(call))})


async def read_workspace_body(
    call: Call, creating: bool
) -> tuple[str | Missing, str | Missing, str | Missing, dict[str, Any]]:
    """(name, slug, tier, settings) from the body; absent fields are MISSING."""
    data = await read_json_object(call.request, call.settings.max_body_bytes)
    checker = Checker(data, allowed=("name", "slug", "tier", "settings"))
    name = checker.string("name", required=creating, max_len=255)
    slug = checker.string("slug", max_len=SLUG_MAX, pattern=SLUG)
    tier = checker.choice("tier", TIERS)
    settings = check_settings(checker)
    checker.done()
    return name, slug, tier, settings


async def own_tier(call: Call) -> str:
    """The plan of the caller's own workspace (principal.tier is its key's effective rate tier)."""
    return (await call.services.workspaces.get(call.principal.workspace_id))["tier"]


def check_new_tier(tier: str, own: str) -> None:
    """A key may create workspaces on its own workspace's plan or a lower one, never above."""
    if exceeds(tier, own):
        raise AccessDenied(
            f"This API key's workspace is on the {own!r} tier; it cannot create a workspace "
            f"on the higher {tier!r} tier."
        )


def check_tier_unchanged(workspace: dict, tier: str | Missing) -> None:
    """The plan is not the client's to change: only the same tier (a no-op) is accepted."""
    if present(tier) and tier != workspace["tier"]:
        raise AccessDenied(
            f"Workspace {workspace['id']} is on the {workspace['tier']!r} tier. A workspace's tier "
            "changes only through the operator: python -m app set-tier --workspace-id "
            f"{workspace['id']} --tier {tier}."
        )


async def create_workspace(call: Call) -> Response:
    given_name, slug, tier, settings = await read_workspace_body(call, creating=True)
    name = required(given_name)
    if present(tier):
        check_new_tier(tier, await own_tier(call))
    row = await workspaces.create_workspace(
        call.pool,
        call.principal.account_id,
        name.strip(),
        slug if present(slug) else None,
        slugify(name),
        tier if present(tier) else "free",
        {k: v for k, v in settings.items() if v is not None},
    )
    return json_response(201, {"message": "Workspace created successfully.", "data": workspace_view(row)})


async def update_workspace(call: Call) -> Response:
    workspace = await load_accessible(call)
    name, slug, tier, settings = await read_workspace_body(call, creating=False)
    check_tier_unchanged(workspace, tier)
    row = await workspaces.update_workspace(
        call.pool,
        workspace["id"],
        name.strip() if present(name) else None,
        slug if present(slug) else None,
        settings,
    )
    call.services.workspaces.forget(row["id"])  # this process reads its own write at once
    return json_response(200, {"message": "Workspace updated successfully.", "data": workspace_view(row)})


async def delete_workspace(call: Call) -> Response:
    workspace = await load_accessible(call)
    hashes = await api_keys.workspace_key_hashes(call.pool, workspace["id"])
    await workspaces.delete_workspace(call.pool, workspace["id"])
    call.services.workspaces.forget(workspace["id"])
    await call.services.authenticator.forget(hashes)
    return Response(204)


WORKSPACE_PROPERTIES = {
    "name": {"type": "string", "maxLength": 255},
    "slug": {"type": "string", "maxLength": SLUG_MAX, "pattern": SLUG.pattern},
    "tier": {"type": "string", "enum": list(TIERS)},
    "settings": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}, "locale": {"type": "string"}},
    },
}
CREATE_BODY = {
    "type": "object",
    "properties": {
        **WORKSPACE_PROPERTIES,
        "tier": {
            "type": "string",
            "enum": list(TIERS),
            "default": "free",
            "description": "At most the tier of the caller's own workspace (403 otherwise)",
        },
    },
    "required": ["name"],
}
UPDATE_BODY = {
    "type": "object",
    "properties": {
        **WORKSPACE_PROPERTIES,
        "tier": {
            "type": "string",
            "enum": list(TIERS),
            "description": "Accepted only if it is the current tier; the operator changes tiers (403 otherwise)",
        },
    },
}
LIST_QUERY = (
    "page",
    "per_page",
    "sort",
    "fields",
    "include",
    "search",
    "tier",
    "slug",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
)
BASE = "/api/v1/workspaces"
ROUTES = [
    Route(
        "GET",
        BASE,
        list_workspaces,
        "workspaces:read",
        "List the account's workspaces",
        "Workspaces",
        query=LIST_QUERY,
        errors=(422,),
    ),
    Route(
        "POST",
        BASE,
        create_workspace,
        "workspaces:write",
        "Create a workspace",
        "Workspaces",
        status=201,
        body=CREATE_BODY,
        errors=(422,),
    ),
    Route("GET", BASE + "/{id}", get_workspace, "workspaces:read", "Get a workspace", "Workspaces", errors=(404,)),
    Route(
        "PATCH",
        BASE + "/{id}",
        update_workspace,
        "workspaces:write",
        "Update a workspace (settings merged)",
        "Workspaces",
        body=UPDATE_BODY,
        errors=(404, 422),
    ),
    Route(
        "DELETE",
        BASE + "/{id}",
        delete_workspace,
        "workspaces:delete",
        "Delete a workspace and its API keys",
        "Workspaces",
        status=204,
        errors=(404,),
    ),
]
