"""HTTP: /api/v1/webhooks — endpoints of the caller's workspace, their deliveries, a test send,
a manual retry and secret rotation. Deliveries themselves are made by ingest/webhooks/dispatcher.py."""

import re
import uuid
from datetime import UTC, datetime

import orjson
from blacksheep import Response

from app.access.scopes import event_read_scope, grants
from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, ApiError, json_response
from app.http.listing import page_body, parse_list_query
from app.http.presenters import iso
from app.http.routing import Call, Route, path_id
from app.http.validation import MISSING, Checker, Missing, present, required
from ingest.webhooks import delivery
from ingest.webhooks.signing import decode_secret, generate_secret
from ingest.webhooks.ssrf import Guard, UnsafeAddress
from storage.config import Network, WebhooksConfig
from storage.postgres import webhooks
from storage.postgres.domain_events import CATALOGUE, envelope, matches
from storage.postgres.webhooks import DeliveryStatus, Outcome

# As for SEO report URLs: browsers and servers handle about 2 KB.
URL_MAX = 2048
MAX_EVENTS = 50
# A wildcard names a family (`seo.*`, or one yet to come such as the spec's `post.*`) or all (`*`).
WILDCARD = re.compile(r"\*|[a-z][a-z_]*(?:\.[a-z][a-z_]*)*\.\*")
DEFAULT_GRACE_HOURS = 24
MAX_GRACE_HOURS = 720  # as for API keys: two live secrets for a month at most


class CannotRetry(ApiError):
    status, code = 400, "cannot_retry"


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


def check_url(checker: Checker, creating: bool, allowed_networks: tuple[Network, ...]) -> str | Missing:
    url, parts = checker.url("url", ("https",), required=creating, max_len=URL_MAX)
    host = None if parts is None else parts.hostname  # split_url refuses a URL without a host
    if not present(url) or host is None:
        return MISSING
    try:
        Guard(allowed_networks).check_literal(host)
    except UnsafeAddress as exc:
        checker.fail("url", f"The url may not point at a private or local address ({exc}).")
    except ValueError as exc:
        checker.fail("url", f"The url's host is not a host name ({exc}).")
    return url


def check_events(checker: Checker, creating: bool) -> list[str] | Missing:
    events = checker.string_list("events", required=creating, max_items=MAX_EVENTS)
    if not present(events):
        return events
    for name in events:
        if name not in CATALOGUE and not WILDCARD.fullmatch(name):
            checker.fail("events", f"Unknown event type {name!r}; see the catalogue, or use a wildcard (seo.*, *).")
    return list(dict.fromkeys(events))


def unreadable(patterns: list[str], held: frozenset[str]) -> dict[str, list[str]]:
    """Scope → the events of the catalogue the patterns deliver that need it and `held` lacks."""
    missing: dict[str, list[str]] = {}
    for name in CATALOGUE:
        scope = event_read_scope(name)
        if matches(patterns, name) and not grants(held, scope):
            missing.setdefault(scope, []).append(name)
    return missing


def check_readable(checker: Checker, events: list[str] | Missing, held: frozenset[str]) -> None:
    """A key subscribes an endpoint only to events whose data it may read itself."""
    for scope, names in unreadable(events if present(events) else [], held).items():
        checker.fail(
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


async def read_endpoint_body(
    call: Call, creating: bool
) -> tuple[str | Missing, list[str] | Missing, str | Missing, bool | None]:
    """(url, events, secret, is_active): absent fields MISSING (is_active None); secret only when
    creating, is_active only when updating."""
    data = await read_json_object(call.request, call.settings.max_body_bytes)
    allowed = ("url", "events", "secret") if creating else ("url", "events", "is_active")
    checker = Checker(data, allowed=allowed)
    url = check_url(checker, creating, webhooks_config(call).allowed_networks)
    events = check_events(checker, creating)
    check_readable(checker, events, call.principal.scopes)
    secret = checker.string("secret", max_len=200) if creating else MISSING
    if present(secret):
        try:
            decode_secret(secret)
        except ValueError as exc:
            checker.fail("secret", f"The secret must be whsec_ and base64 of 24 to 64 random bytes: {exc}.")
    active = data.get("is_active")
    if "is_active" in data and not isinstance(active, bool):
        checker.fail("is_active", "The is_active must be true or false.")
    checker.done()
    return url, events, secret, active


async def list_webhooks(call: Call) -> Response:
    query = parse_list_query(call.request, webhooks.LISTING)
    rows, total = await webhooks.list_endpoints(call.pool, call.principal.workspace_id, query)
    items = [endpoint_view(row) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_webhook(call: Call) -> Response:
    row = await webhooks.get_endpoint(call.pool, call.principal.workspace_id, path_id(call))
    return json_response(200, {"data": endpoint_view(row, detail=True)})


async def create_webhook(call: Call) -> Response:
    url, events, given_secret, _ = await read_endpoint_body(call, creating=True)
    secret = given_secret if present(given_secret) and given_secret else generate_secret()
    row = await webhooks.create_endpoint(
        call.pool, call.principal.workspace_id, required(url), required(events), secret
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
    body_url, body_events, _, active = await read_endpoint_body(call, creating=False)
    url = body_url if present(body_url) else None
    events = body_events if present(body_events) else None
    if url is not None and events is None:  # its events would go elsewhere: may the caller read them?
        await load_readable_endpoint(call, "change the url of")
    row = await webhooks.update_endpoint(call.pool, call.principal.workspace_id, path_id(call), url, events, active)
    return json_response(
        200, {"message": "Webhook endpoint updated successfully.", "data": endpoint_view(row, detail=True)}
    )


async def delete_webhook(call: Call) -> Response:
    await webhooks.delete_endpoint(call.pool, call.principal.workspace_id, path_id(call))
    return Response(204)


async def rotate_webhook_secret(call: Call) -> Response:
    data = await read_json_object(call.request, call.settings.max_body_bytes, required=False)
    checker = Checker(data, allowed=("grace_period_hours",))
    grace = checker.integer("grace_period_hours", minimum=0, maximum=MAX_GRACE_HOURS)
    checker.done()
    await load_readable_endpoint(call, "rotate the secret of")
    row = await webhooks.rotate_secret(
        call.pool,
        call.principal.workspace_id,
        path_id(call),
        generate_secret(),
        grace if present(grace) else DEFAULT_GRACE_HOURS,
    )
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


ENDPOINT_PROPERTIES = {
    "url": {"type": "string", "format": "uri", "maxLength": URL_MAX, "pattern": "^https://"},
    "events": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_EVENTS,
        "items": {
            "type": "string",
            "description": "An event type or a wildcard (seo.*, *)",
            "examples": sorted(CATALOGUE),
        },
    },
}
CREATE_BODY = {
    "type": "object",
    "properties": {
        **ENDPOINT_PROPERTIES,
        "secret": {"type": "string", "pattern": "^whsec_", "description": "Generated when absent; shown once"},
    },
    "required": ["url", "events"],
}
UPDATE_BODY = {"type": "object", "properties": {**ENDPOINT_PROPERTIES, "is_active": {"type": "boolean"}}}
ROTATE_BODY = {
    "type": "object",
    "properties": {
        "grace_period_hours": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_GRACE_HOURS,
            "default": DEFAULT_GRACE_HOURS,
            "description": "How long the replaced secret keeps signing alongside the new one",
        }
    },
}
LIST_QUERY = (
    "page",
    "per_page",
    "sort",
    "fields",
    "search",
    "status",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
)
DELIVERY_QUERY = (
    "page",
    "per_page",
    "sort",
    "fields",
    "status",
    "event_type",
    "event_id",
    "created_after",
    "created_before",
)
BASE = "/api/v1/webhooks"
TAG = "Webhooks"
ROUTES = [
    Route(
        "GET",
        BASE,
        list_webhooks,
        "webhooks:read",
        "List the workspace's webhook endpoints",
        TAG,
        query=LIST_QUERY,
        errors=(422,),
    ),
    Route(
        "POST",
        BASE,
        create_webhook,
        "webhooks:write",
        "Create a webhook endpoint (the secret is shown once)",
        TAG,
        status=201,
        body=CREATE_BODY,
        errors=(422,),
    ),
    Route(
        "GET", BASE + "/{id}", get_webhook, "webhooks:read", "Get a webhook endpoint and its health", TAG, errors=(404,)
    ),
    Route(
        "PATCH",
        BASE + "/{id}",
        update_webhook,
        "webhooks:write",
        "Update a webhook endpoint (is_active: true enables it again)",
        TAG,
        body=UPDATE_BODY,
        errors=(404, 422),
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
        errors=(404, 422),
    ),
    Route(
        "GET",
        BASE + "/{id}/deliveries",
        list_webhook_deliveries,
        "webhooks:read",
        "List an endpoint's deliveries (status: pending, success, failed, retrying)",
        TAG,
        query=DELIVERY_QUERY,
        errors=(404, 422),
    ),
    Route(
        "POST",
        BASE + "/{webhook_id}/deliveries/{delivery_id}/retry",
        retry_webhook_delivery,
        "webhooks:write",
        "Queue another attempt of a delivery that has not succeeded",
        TAG,
        errors=(400, 404, 409),
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
