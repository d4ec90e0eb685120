"""HTTP: /api/v1/webhooks — endpoints of the caller's workspace, their deliveries, a test send,
a manual retry and secret rotation. Deliveries themselves are made by ingest/webhooks/dispatcher.py.

Each body is one shape (app/http/shapes.py) that validates it and documents it. What no schema
can state stays as code after the shape's parse, answering 422 on the field: a URL whose host is
a local name (Guard.check_literal), events the key may not read itself.
"""

import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from blacksheep import Response

from app.access.scopes import event_read_scope, grants
from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, ApiError, ValidationFailed, json_response
from app.http.listing import page_answer, page_body, parse_list_query
from app.http.presenters import iso
from app.http.routing import Call, Route, path_id
from app.http.shapes import (
    Boolean,
    Choice,
    DateTime,
    Errors,
    Field,
    Free,
    Integer,
    List,
    Nullable,
    Object,
    Text,
    Url,
    anchored,
    fail,
    response,
)
from app.http.validation import ID_MAX, Missing
from ingest.webhooks import delivery
from ingest.webhooks.signing import generate_secret
from ingest.webhooks.ssrf import Guard, UnsafeAddress
from storage.config import Network, WebhooksConfig
from storage.postgres import webhooks
from storage.postgres.domain_events import CATALOGUE, envelope, matches
from storage.postgres.webhooks import DeliveryStatus, Outcome

# As for SEO report URLs: browsers and servers handle about 2 KB.
URL_MAX = 2048
MAX_EVENTS = 50
EVENT_MAX = 100  # a wildcard's length; catalogue names are far shorter
# A wildcard names a family (`seo.*`, or one yet to come such as the spec's `post.*`) or all (`*`).
WILDCARD = "\\*|[a-z][a-z_]*(?:\\.[a-z][a-z_]*)*\\.\\*"
WILDCARD_RE = re.compile(WILDCARD)
# Standard Webhooks: whsec_ and the base64 of 24 to 64 random bytes (ingest/webhooks/signing.py),
# padding optional: 32 to 86 characters, never 4k+1 of them, a "=" or "==" only where one is due.
_B64 = "[A-Za-z0-9+/]"
SECRET = (
    f"whsec_(?:(?:{_B64}{{4}}){{8,20}}(?:{_B64}{{2}}(?:==?)?|{_B64}{{3}}=?)?"
    f"|(?:{_B64}{{4}}){{21}}(?:{_B64}{{2}}(?:==?)?)?)"
)
SECRET_MAX = 94  # whsec_, 86 characters of base64, ==
DEFAULT_GRACE_HOURS = 24
MAX_GRACE_HOURS = 720  # as for API keys: two live secrets for a month at most
COUNT_MAX = 2**63 - 1  # bigint counters
RESPONSE_CODE_MAX = 2**31 - 1  # webhook_deliveries.response_code is an integer


class CannotRetry(ApiError):
    """The delivery's state refuses another attempt: it succeeded, or its endpoint is disabled."""

    status, code = 409, "cannot_retry"


class EventName(Field):
    """A catalogue event type, or a wildcard (`seo.*`, `*`)."""

    description = "An event type of the catalogue, or a wildcard: `family.*` or `*`"

    def schema(self) -> dict[str, Any]:
        wildcard = {"maxLength": EVENT_MAX, "pattern": anchored(WILDCARD)}
        return {"type": "string", "anyOf": [{"enum": sorted(CATALOGUE)}, wildcard]}

    def read(self, value: Any, name: str, errors: Errors) -> str | Missing:
        if isinstance(value, str) and (
            value in CATALOGUE or (len(value) <= EVENT_MAX and WILDCARD_RE.fullmatch(value))
        ):
            return value
        shown = repr(value)[:120]
        return fail(errors, name, f"Unknown event type {shown}; see the catalogue, or use a wildcard (seo.*, *).")


URL = Url(
    ("https",),
    URL_MAX,
    description="Where deliveries go, its host named by name (deliveries reach only public addresses). "
    "Refused besides the grammar: a local name (localhost, *.local, *.internal) unless the operator "
    "allows private networks",
    example="https://your-app.com/webhooks",
    addresses=False,
)
EVENTS = List(
    EventName(),
    MAX_EVENTS,
    unique=True,
    description="Refused besides the grammar: events whose data the API key may not read itself "
    "(e.g. api_key.* needs api_keys:read)",
)
CREATE_BODY = Object(
    {
        "url": URL,
        "events": EVENTS,
        "secret": Text(
            SECRET_MAX,
            SECRET,
            "must be whsec_ and the base64 of 24 to 64 random bytes",
            description="Signing secret; generated when absent. Shown only in this answer",
        ),
    },
    required=("url", "events"),
)
UPDATE_BODY = Object({"url": URL, "events": EVENTS, "is_active": Boolean(description="true enables it again")})
ROTATE_BODY = Object(
    {
        "grace_period_hours": Integer(
            0,
            MAX_GRACE_HOURS,
            description=f"How long the replaced secret keeps signing alongside the new one; default "
            f"{DEFAULT_GRACE_HOURS}",
        )
    }
)

# Answers.
TEXT = Free("string")
ID = Integer(1, ID_MAX)
COUNT = Integer(0, COUNT_MAX)
WHEN = DateTime()
EVENT_LIST = List(TEXT, MAX_EVENTS)
RESPONSE_CODE = Nullable(Integer(0, RESPONSE_CODE_MAX))
ENDPOINT = {
    "id": ID,
    "url": TEXT,
    "events": EVENT_LIST,
    "is_active": Boolean(),
    "success_count": COUNT,
    "failure_count": COUNT,
    "consecutive_failures": COUNT,
    "last_delivery_at": Nullable(WHEN),
    "created_at": WHEN,
}
ENDPOINT_DETAIL = Object({**ENDPOINT, "disabled_reason": TEXT}, required=tuple(ENDPOINT))
ENDPOINT_ITEM = response({**ENDPOINT, "updated_at": WHEN}, required=())
# The secret is shown once: a replay of the answer (Idempotent-Replayed, app/http/idempotency.py)
# has it null and says so with secret_redacted.
SHOWN_SECRET = Nullable(TEXT, description="The signing secret, shown only in this answer: null in a replay of it")
REDACTED = {"secret_redacted": Boolean(description="Present (true) in a replay, whose secret is null")}
CREATED = Object(
    {name: ENDPOINT[name] for name in ("id", "url", "events")}
    | {"secret": SHOWN_SECRET, "is_active": Boolean(), "created_at": WHEN, **REDACTED},
    required=("id", "url", "events", "secret", "is_active", "created_at"),
)
ROTATED = Object(
    {"id": ID, "secret": SHOWN_SECRET, "previous_secret_expires_at": WHEN, **REDACTED},
    required=("id", "secret", "previous_secret_expires_at"),
)
STATUS = Choice([s.value for s in DeliveryStatus])
QUEUED = Object({"id": ID, "status": STATUS, "attempt": COUNT}, required=("id", "status", "attempt"))
DELIVERY_ITEM = response(
    {
        "id": ID,
        "event_id": TEXT,
        "event_type": TEXT,
        "status": STATUS,
        "response_code": RESPONSE_CODE,
        "attempt": COUNT,
        "delivered_at": WHEN,
        "next_retry_at": Nullable(WHEN),
        "error": TEXT,
        "created_at": WHEN,
    },
    required=(),
)


def sent_answer(success: bool, detail: str) -> dict:
    """One of the test send's two answers: the receiver's body on success, the error otherwise."""
    schema = response(
        {
            "success": Boolean(),
            "status_code": RESPONSE_CODE,
            "response_time_ms": Integer(0, COUNT_MAX),
            detail: Nullable(TEXT),
        }
    )
    schema["properties"]["success"]["const"] = success
    return schema


TEST_ANSWER = {"oneOf": [sent_answer(True, "response_body"), sent_answer(False, "error")]}


def webhooks_config(call: Call) -> WebhooksConfig:
    """The dispatcher's section: test sends go out as deliveries do, through the same guard."""
    return call.services.config.webhooks


def endpoint_view(row: dict, detail: bool = False) -> dict:
    view = {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "is_active": row["is_active"],
        "success_count": row["success_count"],
        "failure_count": row["failure_count"],
        "last_delivery_at": iso(row["last_delivery_at"]),
        "created_at": iso(row["created_at"]),
    }
    if detail:
        view["consecutive_failures"] = row["consecutive_failures"]
        if not row["is_active"] and row["disabled_reason"]:
            view["disabled_reason"] = row["disabled_reason"]
    return view


def endpoint_item(row: dict, chosen: list[str] | None) -> dict:
    """A listed endpoint: the spec's fields, or those `fields=` chose among all listable ones."""
    view = endpoint_view(row)
    if chosen is not None:
        view |= {"consecutive_failures": row["consecutive_failures"], "updated_at": iso(row["updated_at"])}
    return view


def delivery_view(row: dict) -> dict:
    view = {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "status": row["status"],
        "response_code": row["response_code"],
        "attempt": row["attempt"],
        "created_at": iso(row["created_at"]),
    }
    if row["status"] == DeliveryStatus.SUCCESS:
        view["delivered_at"] = iso(row["delivered_at"])
    if row["status"] == DeliveryStatus.RETRYING:
        view["next_retry_at"] = iso(row["next_attempt_at"])
    if row["error"] and row["status"] != DeliveryStatus.SUCCESS:
        view["error"] = row["error"]
    return view


def check_host(url: str, allowed_networks: tuple[Network, ...], errors: Errors) -> None:
    """The url's grammar is the shape's (a host name, never an address); the guard refuses local
    names, and would refuse a private address literal, with the same words as at delivery."""
    host = urlsplit(url).hostname or ""  # Url's grammar always has one
    try:
        Guard(allowed_networks).check_literal(host)
    except UnsafeAddress as exc:
        fail(errors, "url", f"The url may not point at a private or local address ({exc}).")
    except ValueError as exc:  # not reached for hosts of Url's grammar: the guard's own contract
        fail(errors, "url", f"The url's host is not a host name ({exc}).")


def unreadable(patterns: list[str], held: frozenset[str]) -> dict[str, list[str]]:
    """Scope → the events of the catalogue the patterns deliver that need it and `held` lacks."""
    missing: dict[str, list[str]] = {}
    for name in CATALOGUE:
        scope = event_read_scope(name)
        if matches(patterns, name) and not grants(held, scope):
            missing.setdefault(scope, []).append(name)
    return missing


def check_readable(events: list[str], held: frozenset[str], errors: Errors) -> None:
    """A key subscribes an endpoint only to events whose data it may read itself."""
    for scope, names in unreadable(events, held).items():
        fail(
            errors,
            "events",
            f"This API key cannot subscribe to {', '.join(names)}: reading them needs "
            f"scope {scope}, which it does not hold.",
        )


async def load_readable_endpoint(call: Call, action: str) -> dict:
    """The endpoint, if the caller may read every event it receives: its URL and secret decide
    where those go and who can sign them."""
    row = await webhooks.get_endpoint(call.pool, call.principal.workspace_id, path_id(call))
    missing = unreadable(list(row["events"]), call.principal.scopes)
    if missing:
        scope, names = next(iter(missing.items()))
        raise AccessDenied(
            f"This API key cannot {action} webhook endpoint {row['id']}, which receives "
            f"{', '.join(names)}: reading them needs scope {scope}, which it does not hold."
        )
    return row


async def read_endpoint_body(call: Call, shape: Object) -> dict[str, Any]:
    """The body's fields, past the shape and then the rules no schema states (host, readable events)."""
    fields = shape.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    errors: Errors = {}
    if "url" in fields:
        check_host(fields["url"], webhooks_config(call).allowed_networks, errors)
    check_readable(fields.get("events", []), call.principal.scopes, errors)
    if errors:
        raise ValidationFailed(errors)
    return fields


async def list_webhooks(call: Call) -> Response:
    query = parse_list_query(call.request, webhooks.LISTING)
    rows, total = await webhooks.list_endpoints(call.pool, call.principal.workspace_id, query)
    items = [endpoint_item(row, query.fields) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_webhook(call: Call) -> Response:
    row = await webhooks.get_endpoint(call.pool, call.principal.workspace_id, path_id(call))
    return json_response(200, {"data": endpoint_view(row, detail=True)})


async def create_webhook(call: Call) -> Response:
    fields = await read_endpoint_body(call, CREATE_BODY)
    secret = fields.get("secret") or generate_secret()
    row = await webhooks.create_endpoint(
        call.pool, call.principal.workspace_id, fields["url"], fields["events"], secret
    )
    data = {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "secret": row["secret"],
        "is_active": row["is_active"],
        "created_at": iso(row["created_at"]),
    }
    return json_response(201, {"message": "Webhook endpoint created successfully.", "data": data})


async def update_webhook(call: Call) -> Response:
    fields = await read_endpoint_body(call, UPDATE_BODY)
    url, events = fields.get("url"), fields.get("events")
    if url is not None and events is None:  # its events would go elsewhere: may the caller read them?
        await load_readable_endpoint(call, "change the url of")
    row = await webhooks.update_endpoint(
        call.pool, call.principal.workspace_id, path_id(call), url, events, fields.get("is_active")
    )
    return json_response(
        200, {"message": "Webhook endpoint updated successfully.", "data": endpoint_view(row, detail=True)}
    )


async def delete_webhook(call: Call) -> Response:
    await webhooks.delete_endpoint(call.pool, call.principal.workspace_id, path_id(call))
    return Response(204)


async def rotate_webhook_secret(call: Call) -> Response:
    data = await read_json_object(call.request, call.settings.max_body_bytes, required=False)
    grace = ROTATE_BODY.parse(data).get("grace_period_hours", DEFAULT_GRACE_HOURS)
    await load_readable_endpoint(call, "rotate the secret of")
    row = await webhooks.rotate_secret(call.pool, call.principal.workspace_id, path_id(call), generate_secret(), grace)
    body = {
        "id": row["id"],
        "secret": row["secret"],
        "previous_secret_expires_at": iso(row["previous_secret_expires_at"]),
    }
    return json_response(200, {"message": "Webhook secret rotated successfully.", "data": body})


async def test_webhook(call: Call) -> Response:
    endpoint = await webhooks.signing_endpoint(call.pool, call.principal.workspace_id, path_id(call))
    now, event_id = datetime.now(UTC), "evt_" + uuid.uuid4().hex
    payload = {"webhook_id": endpoint["id"], "message": "This is a test event from Sluice."}
    body = orjson.dumps(envelope(event_id, "webhook.test", endpoint["workspace_id"], now, payload)).decode()
    result = await send_now(webhooks_config(call), endpoint, event_id, body, now)
    status = DeliveryStatus.SUCCESS if result.success else DeliveryStatus.FAILED
    outcome = Outcome(status, result.status_code, result.response_body, result.error, result.duration_ms, now, None)
    await webhooks.record_test_delivery(call.pool, endpoint["id"], event_id, body, outcome)
    answer: dict[str, object] = {
        "success": result.success,
        "status_code": result.status_code,
        "response_time_ms": result.duration_ms,
    }
    answer.update({"response_body": result.response_body} if result.success else {"error": result.error})
    return json_response(200, answer)


async def send_now(config: WebhooksConfig, endpoint: dict, event_id: str, body: str, now: datetime) -> delivery.Result:
    secrets: tuple[str, ...] = (endpoint["secret"],)
    expires = endpoint["previous_secret_expires_at"]
    if endpoint["previous_secret"] and expires is not None and expires > now:
        secrets += (endpoint["previous_secret"],)
    async with delivery.create_client(config) as client:
        return await delivery.attempt(client, endpoint["url"], event_id, body, secrets, now, config.timeout_seconds)


async def list_webhook_deliveries(call: Call) -> Response:
    query = parse_list_query(call.request, webhooks.DELIVERY_LISTING)
    rows, total = await webhooks.list_deliveries(call.pool, call.principal.workspace_id, path_id(call), query)
    items = [delivery_view(row) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def retry_webhook_delivery(call: Call) -> Response:
    workspace_id, endpoint_id = call.principal.workspace_id, path_id(call, "webhook_id")
    endpoint = await webhooks.get_endpoint(call.pool, workspace_id, endpoint_id)
    found = await webhooks.get_delivery(call.pool, workspace_id, endpoint_id, path_id(call, "delivery_id"))
    if found["status"] == DeliveryStatus.SUCCESS:
        raise CannotRetry("This delivery already succeeded.")
    if not endpoint["is_active"]:
        raise CannotRetry("The webhook endpoint is disabled; enable it with PATCH is_active first.")
    row = await webhooks.requeue_delivery(call.pool, workspace_id, endpoint_id, found["id"])
    data = {"id": row["id"], "status": row["status"], "attempt": row["attempt"] + 1}
    return json_response(200, {"message": "Delivery queued for retry.", "data": data})


BASE = "/api/v1/webhooks"
TAG = "Webhooks"


def with_message(data: Field) -> dict:
    return response({"message": TEXT, "data": data})


ROUTES = [
    Route(
        "GET",
        BASE,
        list_webhooks,
        "webhooks:read",
        "List the workspace's webhook endpoints",
        TAG,
        listing=webhooks.LISTING,
        answer=page_answer(ENDPOINT_ITEM),
    ),
    Route(
        "POST",
        BASE,
        create_webhook,
        "webhooks:write",
        "Create a webhook endpoint (the secret is shown once). 422 also for a local host name, and for "
        "events the key may not read",
        TAG,
        status=201,
        body=CREATE_BODY,
        answer=with_message(CREATED),
    ),
    Route(
        "GET",
        BASE + "/{id}",
        get_webhook,
        "webhooks:read",
        "Get a webhook endpoint and its health",
        TAG,
        answer=response({"data": ENDPOINT_DETAIL}),
        errors=(404,),
    ),
    Route(
        "PATCH",
        BASE + "/{id}",
        update_webhook,
        "webhooks:write",
        "Update a webhook endpoint (is_active: true enables it again). 422 also for a local host name, "
        "and for events the key may not read",
        TAG,
        body=UPDATE_BODY,
        answer=with_message(ENDPOINT_DETAIL),
        errors=(404,),
    ),
    Route(
        "DELETE",
        BASE + "/{id}",
        delete_webhook,
        "webhooks:delete",
        "Delete a webhook endpoint; its pending deliveries are cancelled",
        TAG,
        status=204,
        errors=(404,),
    ),
    Route(
        "POST",
        BASE + "/{id}/test",
        test_webhook,
        "webhooks:write",
        "Send a signed webhook.test event now and report the answer",
        TAG,
        answer=TEST_ANSWER,
        errors=(404,),
    ),
    Route(
        "POST",
        BASE + "/{id}/rotate-secret",
        rotate_webhook_secret,
        "webhooks:write",
        "New signing secret; the old one signs alongside it for the grace period",
        TAG,
        body=ROTATE_BODY,
        body_required=False,
        answer=with_message(ROTATED),
        errors=(404,),
    ),
    Route(
        "GET",
        BASE + "/{id}/deliveries",
        list_webhook_deliveries,
        "webhooks:read",
        "List an endpoint's deliveries (status: pending, success, failed, retrying)",
        TAG,
        listing=webhooks.DELIVERY_LISTING,
        answer=page_answer(DELIVERY_ITEM),
        errors=(404,),
    ),
    Route(
        "POST",
        BASE + "/{webhook_id}/deliveries/{delivery_id}/retry",
        retry_webhook_delivery,
        "webhooks:write",
        "Queue another attempt of a delivery that has not succeeded (409 cannot_retry: it succeeded, "
        "or its endpoint is disabled)",
        TAG,
        answer=with_message(QUEUED),
        errors=(404, 409),
    ),
]


def openapi_webhooks() -> dict:
    """OpenAPI 3.1's top-level `webhooks`: one POST per event type, its envelope and an example."""
    headers = {
        name: {"required": True, "schema": {"type": "string"}, "description": text}
        for name, text in (
            ("webhook-id", "The event id (evt_…), the same on every retry: deduplicate on it"),
            ("webhook-timestamp", "Unix seconds of this attempt"),
            ("webhook-signature", "v1,<base64 HMAC-SHA256 of id.timestamp.body>; space-separated during a rotation"),
        )
    }
    documented = {}
    for event in CATALOGUE.values():
        example = envelope(
            "evt_4f1c2a9b8e7d6c5b4a3f2e1d0c9b8a7f",
            event.name,
            12,
            datetime(2026, 1, 15, 10, 30, tzinfo=UTC),
            event.example,
        )
        schema = {
            "type": "object",
            "required": ["id", "type", "timestamp", "workspace_id", "data"],
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string", "const": event.name},
                "timestamp": {"type": "string", "format": "date-time"},
                "workspace_id": {"type": "integer"},
                "data": {"type": "object"},
            },
        }
        documented[event.name] = {
            "post": {
                "summary": event.description,
                "tags": [TAG],
                "parameters": [{"in": "header", "name": name, **spec} for name, spec in headers.items()],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": schema, "example": example}},
                },
                "responses": {"2XX": {"description": "Received; any other answer (3xx too) is retried"}},
            }
        }
    return documented
