"""HTTP: /api/v1/pixel/domains — the workspace's claims on sites' hosts, and their verification.

Several workspaces may claim a host; proving control of it (POST …/{id}/verify,
app/pixel/verification.py) makes a claim the host's one verified claim. Which claim serves an
event's host is decided in app/pixel/sites.py. Changes reach this process's site cache at once and
other processes within SLUICE_PIXEL_CONFIG_CACHE_SECONDS.
"""

import re

from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import json_response
from app.http.listing import page_body, parse_list_query
from app.http.presenters import iso
from app.http.routing import Call, Route, path_id
from app.http.validation import MISSING, Checker, Missing, present, required
from app.pixel.verification import instructions, verify_claim
from storage.postgres import domains

HOST_MAX = 253  # DNS
LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
FEATURES = ("pageviews", "events", "sessions")
FIELDS = ("host", "enabled", "features", "sample_rate")


def normalise_host(value: str) -> str | None:
    """ "Example.COM." → "example.com"; None for a URL, a port, or anything not a host name."""
    host = value.strip().lower().rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")  # browsers send the punycode form
        except UnicodeError:
            return None
    if not host or len(host) > HOST_MAX or not all(LABEL.fullmatch(label) for label in host.split(".")):
        return None
    return host


def domain_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "host": row["host"],
        "enabled": row["enabled"],
        "features": {name: row[name] for name in FEATURES},
        "sample_rate": row["sample_rate"],
        "verification": verification_view(row),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def verification_view(row: dict) -> dict:
    return {
        "status": "verified" if row["verified_at"] is not None else "unverified",
        **instructions(row["host"], row["verification_token"]),
        "method": row["verification_method"],
        "verified_at": iso(row["verified_at"]),
        "lost_at": iso(row["verification_lost_at"]),
    }


def _flag(checker: Checker, data: dict, name: str, label: str):
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        checker.fail(label, f"The {label} must be true or false.")
        return None
    return value


def check_config(checker: Checker, data: dict) -> dict:
    """enabled, pageviews, events, sessions, sample_rate; None (or absent) leaves one unchanged."""
    config = {"enabled": _flag(checker, data, "enabled", "enabled")}
    features = checker.object("features")
    if present(features):
        for name in features:
            if name not in FEATURES:
                checker.fail(f"features.{name}", f"Unknown feature; allowed: {', '.join(FEATURES)}.")
        for name in FEATURES:
            config[name] = _flag(checker, features, name, f"features.{name}")
    rate = data.get("sample_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
        checker.fail("sample_rate", "The sample_rate must be a number between 0 and 1.")
        rate = None
    config["sample_rate"] = None if rate is None else float(rate)
    return config


def check_host(checker: Checker) -> str | Missing:
    """The claimed host, normalised; MISSING (its error recorded) when absent or refused."""
    value = checker.string("host", required=True, max_len=HOST_MAX + 1)
    if not present(value):
        return MISSING
    host = normalise_host(value)
    if host is None:
        checker.fail("host", "The host must be a host name such as example.com, not a URL.")
        return MISSING
    if domains.is_public_suffix(host):
        # A claim there would contest every unverified site under it (app/pixel/sites.py).
        checker.fail("host", f"{host} is a public suffix (as com or co.uk are): register your own domain.")
        return MISSING
    return host


async def read_domain_body(call: Call, creating: bool) -> tuple[str | Missing, dict]:
    """(host, config); the host only when creating (it cannot change), else MISSING."""
    data = await read_json_object(call.request, call.settings.max_body_bytes)
    checker = Checker(data, allowed=FIELDS if creating else FIELDS[1:])
    host = check_host(checker) if creating else MISSING
    config = check_config(checker, data)
    checker.done()
    return host, config


def forget(call: Call, host: str) -> None:
    """A claim on host changed: the cached answers for it and its subdomains go."""
    call.services.pixel.sites.forget(host)


async def list_domains(call: Call) -> Response:
    query = parse_list_query(call.request, domains.LISTING)
    rows, total = await domains.list_domains(call.pool, call.principal.workspace_id, query)
    items = [domain_view(row) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_domain(call: Call) -> Response:
    row = await domains.get_domain(call.pool, call.principal.workspace_id, path_id(call))
    return json_response(200, {"data": domain_view(row)})


async def create_domain(call: Call) -> Response:
    body_host, config = await read_domain_body(call, creating=True)
    host = required(body_host)
    row = await domains.create_domain(call.pool, call.principal.workspace_id, host, config)
    forget(call, host)  # a cached "not registered" must not outlive the registration here
    return json_response(201, {"message": "Domain registered successfully.", "data": domain_view(row)})


async def update_domain(call: Call) -> Response:
    _host, config = await read_domain_body(call, creating=False)
    row = await domains.update_domain(call.pool, call.principal.workspace_id, path_id(call), config)
    forget(call, row["host"])
    return json_response(200, {"message": "Domain updated successfully.", "data": domain_view(row)})


async def verify_domain(call: Call) -> Response:
    row, check = await verify_claim(
        call.pool,
        call.settings.dns_nameservers,
        call.services.config.webhooks.allowed_networks,
        call.principal.workspace_id,
        path_id(call),
    )
    forget(call, row["host"])
    return json_response(200, {"message": f"Domain verified ({check.looked_up}).", "data": domain_view(row)})


async def delete_domain(call: Call) -> Response:
    row = await domains.delete_domain(call.pool, call.principal.workspace_id, path_id(call))
    forget(call, row["host"])
    return Response(204)


CONFIG_PROPERTIES = {
    "enabled": {"type": "boolean"},
    "features": {"type": "object", "properties": {name: {"type": "boolean"} for name in FEATURES}},
    "sample_rate": {"type": "number", "minimum": 0, "maximum": 1},
}
CREATE_BODY = {
    "type": "object",
    "required": ["host"],
    "properties": {
        "host": {"type": "string", "maxLength": HOST_MAX, "description": "e.g. example.com"},
        **CONFIG_PROPERTIES,
    },
}
UPDATE_BODY = {"type": "object", "properties": CONFIG_PROPERTIES}
LIST_QUERY = (
    "page",
    "per_page",
    "sort",
    "fields",
    "search",
    "host",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
)
BASE = "/api/v1/pixel/domains"
ROUTES = [
    Route(
        "GET",
        BASE,
        list_domains,
        "pixel:read",
        "List the workspace's pixel domains",
        "Pixel",
        query=LIST_QUERY,
        errors=(422,),
    ),
    Route(
        "POST",
        BASE,
        create_domain,
        "pixel:write",
        "Register a site's host for the pixel",
        "Pixel",
        status=201,
        body=CREATE_BODY,
        errors=(409, 422),
    ),
    Route("GET", BASE + "/{id}", get_domain, "pixel:read", "Get a pixel domain", "Pixel", errors=(404,)),
    Route(
        "PATCH",
        BASE + "/{id}",
        update_domain,
        "pixel:write",
        "Change a domain's pixel configuration",
        "Pixel",
        body=UPDATE_BODY,
        errors=(404, 422),
    ),
    Route(
        "POST",
        BASE + "/{id}/verify",
        verify_domain,
        "pixel:write",
        "Verify control of the domain's host (DNS TXT, file or meta tag)",
        "Pixel",
        errors=(404, 422),
    ),
    Route(
        "DELETE",
        BASE + "/{id}",
        delete_domain,
        "pixel:delete",
        "Unregister a domain",
        "Pixel",
        status=204,
        errors=(404,),
    ),
]
