"""HTTP: /api/v1/pixel/domains — the workspace's claims on sites' hosts, and their verification.

Several workspaces may claim a host; proving control of it (POST …/{id}/verify,
app/pixel/verification.py) makes a claim the host's one verified claim. Which claim serves an
event's host is decided in app/pixel/sites.py. Changes reach this process's site cache at once and
other processes within SLUICE_PIXEL_CONFIG_CACHE_SECONDS.

Each body and answer is declared once below (app/http/shapes.py). What no schema can say stays
code: a public suffix (co.uk, github.io) is nobody's to claim (403), a host this workspace claims
already is a conflict (409), and a verification that finds no token too (409).

Besides what /pixel/config serves, a domain holds privacy and session settings the pixel applies
(app/pixel/intake.py) and the consumer reads: session timeout, honouring Sec-GPC / DNT, excluded
paths (globs matched in app/pixel/sites.py), and how often the visitor id's salt rotates.
"""

import re

from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, json_response
from app.http.listing import page_answer, page_body, parse_list_query
from app.http.presenters import iso
from app.http.routing import Call, Route, path_id
from app.http.shapes import (
    Boolean,
    Choice,
    DateTime,
    Field,
    Free,
    Integer,
    List,
    Nullable,
    Number,
    Object,
    Text,
    response,
)
from app.http.validation import ID_MAX
from app.pixel.enrichment import ROTATIONS
from app.pixel.verification import Method, instructions, verify_claim
from storage.postgres import domains

HOST_MAX = 253  # DNS
LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# A host as a client may send it: ASCII labels (punycode for international names), at least two
# (a single label is a public suffix), any case, a trailing dot allowed.
HOST_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST = f"(?:{HOST_LABEL}\\.)+{HOST_LABEL}\\.?"
# As stored and shown: lowercase, no trailing dot.
STORED_LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
STORED_HOST = f"(?:{STORED_LABEL}\\.)*{STORED_LABEL}"
FEATURES = ("pageviews", "events", "sessions")
# Privacy and session settings: bounds as the migration's CHECKs (0009) hold them.
SESSION_MINUTES = (1, 240)  # 30 by default, as most web analytics count a session
EXCLUDED_PATHS_MAX = 50
EXCLUDED_PATH_MAX = 200
# A path glob: "/" then printable ASCII without space, "?" or "#" (a URL's path as browsers send
# it, anything else percent-encoded; a query or fragment is never part of the path matched).
EXCLUDED_PATH = '/[!"$->@-~]*'


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


FLAG = Nullable(Boolean(), "null or absent: unchanged (on create: true)")


def excluded_paths(description: str | None = None) -> List:
    path = Text(
        EXCLUDED_PATH_MAX,
        EXCLUDED_PATH,
        'must start with "/" and hold printable ASCII without spaces, "?" or "#"',
        example="/admin/**",
    )
    return List(path, EXCLUDED_PATHS_MAX, min_items=0, unique=True, description=description)


SESSION_TIMEOUT = "Minutes without an event after which a visitor's session ends"
HONOR_SIGNALS = "When true, an event whose request carries Sec-GPC: 1 or DNT: 1 is dropped (reason consent)"
EXCLUDED = (
    "Page paths never tracked (reason excluded): `*` matches within one path segment, `**` across "
    "segments, the rest is literal; a `**` that is a whole segment may also stand for none (/admin/** "
    "covers /admin and /admin/a/b, /shop/**/cart covers /shop/cart). Matched whole against the URL's "
    "path as sent (percent-encoded), case-sensitive"
)
ROTATION = "How often (UTC) the salt of the anonymous visitor id changes: a visitor is recognised within one period"
CONFIG_FIELDS: dict[str, Field] = {
    "enabled": FLAG,
    "features": Object({name: FLAG for name in FEATURES}),
    "sample_rate": Nullable(Number(0, 1), "The share of visitors kept; null or absent: unchanged (on create: 1)"),
    "session_timeout_minutes": Nullable(
        Integer(*SESSION_MINUTES), f"{SESSION_TIMEOUT}; null or absent: unchanged (on create: 30)"
    ),
    "honor_privacy_signals": Nullable(Boolean(), f"{HONOR_SIGNALS}; null or absent: unchanged (on create: true)"),
    "excluded_paths": Nullable(excluded_paths(), f"{EXCLUDED}; null or absent: unchanged (on create: none)"),
    "visitor_id_rotation": Nullable(Choice(ROTATIONS), f"{ROTATION}; null or absent: unchanged (on create: daily)"),
}
CREATE_BODY = Object(
    {
        "host": Text(
            HOST_MAX,
            HOST,
            "must be a host name such as example.com, not a URL",
            description="The site's host name, e.g. example.com (punycode for an international name), stored "
            "lowercase without a trailing dot. A public suffix (co.uk, github.io) is nobody's to claim: 403",
            example="example.com",
        ),
        **CONFIG_FIELDS,
    },
    required=("host",),
)
UPDATE_BODY = Object(CONFIG_FIELDS)

# The answers: a domain as domain_view() shows it.
ID = Integer(1, ID_MAX)
VERIFICATION_FIELDS: dict[str, Field] = {
    "status": Choice(["verified", "unverified"]),
    "token": Free("string"),
    "dns_txt_name": Free("string"),
    "dns_txt_value": Free("string"),
    "file_url": Free("string"),
    "meta_tag": Free("string"),
    "method": Nullable(Choice([method.value for method in Method])),
    "verified_at": Nullable(DateTime()),
    "lost_at": Nullable(DateTime()),
}
DOMAIN_FIELDS: dict[str, Field] = {
    "id": ID,
    "workspace_id": ID,
    "host": Text(HOST_MAX, STORED_HOST),
    "enabled": Boolean(),
    "features": Object({name: Boolean() for name in FEATURES}, required=FEATURES),
    "sample_rate": Number(0, 1),
    "session_timeout_minutes": Integer(*SESSION_MINUTES, description=SESSION_TIMEOUT),
    "honor_privacy_signals": Boolean(HONOR_SIGNALS),
    "excluded_paths": excluded_paths(EXCLUDED),
    "visitor_id_rotation": Choice(ROTATIONS, ROTATION),
    "verification": Object(VERIFICATION_FIELDS, required=tuple(VERIFICATION_FIELDS)),
    "created_at": DateTime(),
    "updated_at": DateTime(),
}
DOMAIN = Object(DOMAIN_FIELDS, required=tuple(DOMAIN_FIELDS))


def domain_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "host": row["host"],
        "enabled": row["enabled"],
        "features": {name: row[name] for name in FEATURES},
        "sample_rate": row["sample_rate"],
        "session_timeout_minutes": row["session_timeout_minutes"],
        "honor_privacy_signals": row["honor_privacy_signals"],
        "excluded_paths": row["excluded_paths"],
        "visitor_id_rotation": row["visitor_id_rotation"],
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


def claimed_host(host: str) -> str:
    """The host as stored; 403 for a public suffix, under which different parties register."""
    host = host.lower().rstrip(".")
    if domains.is_public_suffix(host):
        # A claim there would contest every unverified site under it (app/pixel/sites.py).
        raise AccessDenied(f"{host} is a public suffix (as com or co.uk are): register your own domain.")
    return host


def config_of(body: dict) -> dict:
    """storage's CONFIG_FIELDS from a body (features flattened); None leaves one unchanged."""
    features = body.get("features", {})
    config = {name: features.get(name) for name in FEATURES}
    return {**config, **{name: body.get(name) for name in domains.CONFIG_FIELDS if name not in FEATURES}}


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
    body = CREATE_BODY.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    host = claimed_host(body["host"])
    row = await domains.create_domain(call.pool, call.principal.workspace_id, host, config_of(body))
    forget(call, host)  # a cached "not registered" must not outlive the registration here
    return json_response(201, {"message": "Domain registered successfully.", "data": domain_view(row)})


async def update_domain(call: Call) -> Response:
    body = UPDATE_BODY.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    row = await domains.update_domain(call.pool, call.principal.workspace_id, path_id(call), config_of(body))
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


def domain_answer(message: str | None = None) -> dict:
    """{"message", "data"} after a change (the message fixed unless None), else {"data"}."""
    if message is None:
        return response({"data": DOMAIN})
    return response({"message": Choice([message]), "data": DOMAIN})


BASE = "/api/v1/pixel/domains"
ROUTES = [
    Route(
        "GET",
        BASE,
        list_domains,
        "pixel:read",
        "List the workspace's pixel domains",
        "Pixel",
        listing=domains.LISTING,
        answer=page_answer(response(DOMAIN_FIELDS, required=())),
        errors=(422,),
    ),
    Route(
        "POST",
        BASE,
        create_domain,
        "pixel:write",
        "Register a site's host for the pixel (403 for a public suffix, 409 when this workspace has it)",
        "Pixel",
        status=201,
        body=CREATE_BODY,
        answer=domain_answer("Domain registered successfully."),
        errors=(403, 409, 422),
    ),
    Route(
        "GET",
        BASE + "/{id}",
        get_domain,
        "pixel:read",
        "Get a pixel domain",
        "Pixel",
        answer=domain_answer(),
        errors=(404,),
    ),
    Route(
        "PATCH",
        BASE + "/{id}",
        update_domain,
        "pixel:write",
        "Change a domain's pixel configuration",
        "Pixel",
        body=UPDATE_BODY,
        answer=domain_answer("Domain updated successfully."),
        errors=(404, 422),
    ),
    Route(
        "POST",
        BASE + "/{id}/verify",
        verify_domain,
        "pixel:write",
        "Verify control of the domain's host (DNS TXT, file or meta tag); 409 verification_failed when "
        "no look-up finds the token, each saying what it found",
        "Pixel",
        answer=response({"message": Free("string"), "data": DOMAIN}),
        errors=(404, 409),
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
