"""HTTP: /api/v1/workspaces — list, get, create, update, delete within the key's account.

Each body and answer is declared once below (app/http/shapes.py): the handler validates with the
declaration and /openapi.json shows it. What no schema can say stays code: the tier a key may
create (its own workspace's or lower, else 403), a tier that only the operator changes (403), and a
slug another workspace holds (422).
"""

import re
import unicodedata
import zoneinfo
from functools import lru_cache
from typing import Any

from blacksheep import Response

from app.access.tiers import TIERS, exceeds
from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, json_response
from app.http.listing import page_answer, page_body, parse_list_query
from app.http.presenters import iso, workspace_view
from app.http.routing import Call, Route, path_id
from app.http.shapes import Choice, DateTime, Errors, Field, Free, Integer, Nullable, Object, Text, fail, response
from app.http.validation import ID_MAX, Missing
from storage.postgres import api_keys, workspaces

SLUG = "[a-z0-9]+(?:-[a-z0-9]+)*"
LOCALE = "[a-z]{2,3}(?:[_-][A-Z]{2}|[_-][A-Z][a-z]{3})?"
LOCALE_MAX = len("abc_Abcd")
SLUG_MAX = 100  # the column's varchar(100)
NAME_MAX = 255  # the column's varchar(255)


@lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class TimeZone(Choice):
    """An IANA time zone name this server knows: an enum too long to repeat in a message, and
    shown once in the document (components/schemas/TimeZone)."""

    ref = "TimeZone"

    def read(self, value: Any, name: str, errors: Errors) -> str | Missing:
        if not isinstance(value, str) or value not in self.allowed:
            return fail(errors, name, f"The {name} must be an IANA time zone name, e.g. Europe/London.")
        return value


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:80].strip("-")
    return slug or "workspace"


ID = Integer(1, ID_MAX)
NAME = Text(NAME_MAX, description="Leading and trailing whitespace is dropped")
SLUG_TEXT = Text(
    SLUG_MAX,
    SLUG,
    description="Lowercase letters and digits joined by single hyphens; generated from the name when a "
    "workspace is created without one; one another workspace holds is refused with 422",
)
TIMEZONE = TimeZone(sorted(known_timezones()), description="An IANA time zone name")
LOCALE_TEXT = Text(LOCALE_MAX, LOCALE, "must look like en_GB or fr", description="A language, optionally _REGION")
SETTINGS = Object(
    {"timezone": Nullable(TIMEZONE), "locale": Nullable(LOCALE_TEXT)},
    description="Merged into the current settings; null puts one back to its default (UTC, en_GB)",
)


def workspace_body(tier_rule: str, required: tuple[str, ...] = ()) -> Object:
    tier = Choice(TIERS, description=tier_rule)
    return Object({"name": NAME, "slug": SLUG_TEXT, "tier": tier, "settings": SETTINGS}, required)


CREATE_BODY = workspace_body(
    "Default free; at most the tier of the caller's own workspace (403 above it)", required=("name",)
)
UPDATE_BODY = workspace_body("Accepted only as the current tier: the operator changes tiers (403 otherwise)")

# The answers: a workspace as app/http/presenters.py workspace_view() shows it.
WORKSPACE_FIELDS: dict[str, Field] = {
    "id": ID,
    "name": Text(NAME_MAX),
    "slug": Text(SLUG_MAX, SLUG),
    "tier": Choice(TIERS),
    "account_id": ID,
    "settings": Object({"timezone": TIMEZONE, "locale": LOCALE_TEXT}, required=("timezone", "locale")),
    "created_at": DateTime(),
    "updated_at": DateTime(),
}
WORKSPACE = Object(WORKSPACE_FIELDS, required=tuple(WORKSPACE_FIELDS))
ACCOUNT = Object({"id": ID, "name": Free("string"), "created_at": DateTime()}, required=("id", "name", "created_at"))


def workspace_answer(message: str) -> dict:
    return response({"message": Choice([message]), "data": WORKSPACE})


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


def check_tier_unchanged(workspace: dict, tier: str | None) -> None:
    """The plan is not the client's to change: only the same tier (a no-op) is accepted."""
    if tier is not None and tier != workspace["tier"]:
        raise AccessDenied(
            f"Workspace {workspace['id']} is on the {workspace['tier']!r} tier. A workspace's tier "
            "changes only through the operator: python -m app set-tier --workspace-id "
            f"{workspace['id']} --tier {tier}."
        )


async def create_workspace(call: Call) -> Response:
    body = CREATE_BODY.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    name, tier = body["name"], body.get("tier", "free")
    if "tier" in body:
        check_new_tier(tier, await own_tier(call))
    row = await workspaces.create_workspace(
        call.pool,
        call.principal.account_id,
        name.strip(),
        body.get("slug"),
        slugify(name),
        tier,
        {k: v for k, v in body.get("settings", {}).items() if v is not None},
    )
    return json_response(201, {"message": "Workspace created successfully.", "data": workspace_view(row)})


async def update_workspace(call: Call) -> Response:
    workspace = await load_accessible(call)
    body = UPDATE_BODY.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    check_tier_unchanged(workspace, body.get("tier"))
    name = body.get("name")
    row = await workspaces.update_workspace(
        call.pool,
        workspace["id"],
        name.strip() if name is not None else None,
        body.get("slug"),
        body.get("settings", {}),
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


BASE = "/api/v1/workspaces"
ROUTES = [
    Route(
        "GET",
        BASE,
        list_workspaces,
        "workspaces:read",
        "List the account's workspaces",
        "Workspaces",
        listing=workspaces.LISTING,
        answer=page_answer(response({**WORKSPACE_FIELDS, "account": ACCOUNT}, required=())),
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
        answer=workspace_answer("Workspace created successfully."),
        errors=(422,),
    ),
    Route(
        "GET",
        BASE + "/{id}",
        get_workspace,
        "workspaces:read",
        "Get a workspace",
        "Workspaces",
        answer=response({"data": WORKSPACE}),
        errors=(404,),
    ),
    Route(
        "PATCH",
        BASE + "/{id}",
        update_workspace,
        "workspaces:write",
        "Update a workspace (settings merged)",
        "Workspaces",
        body=UPDATE_BODY,
        answer=workspace_answer("Workspace updated successfully."),
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
