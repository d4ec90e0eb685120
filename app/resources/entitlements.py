"""HTTP: /api/v1/entitlements — check a feature, record usage, summarise a workspace's usage.

Each handler parses its input, asks the ledger (app/resources/ledger.py: counters, plans, durable
usage records) and shapes the answer. Requirements: never over-grant, so Redis away means 503;
and a record that cannot be made durable is taken back and answered 503, never half kept.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import FeatureLimitReached, json_response
from app.http.presenters import iso
from app.http.routing import Call, Route
from app.http.validation import MISSING, Checker, Missing, json_size, parse_int, present, required
from app.resources.features import AMOUNT_MAX, FEATURES, Feature, limit_message, percentage
from app.resources.ledger import Counter, counter_for, record_id
from ingest.events import ch_time, utc_ms
from storage.redis.quota import Outcome, QuotaStatus, marker_key

QUANTITY_MAX = AMOUNT_MAX  # see app/resources/features.py: Lua's doubles must count exactly
METADATA_MAX_BYTES = 2048  # the bound on serialized metadata
EVENT_ID_MAX = 100
FEATURE_NAMES = tuple(FEATURES)


# --- GET /entitlements/check -------------------------------------------------------------


def single(query: dict[str, list[str]], name: str, checker: Checker) -> str | None:
    values = query.get(name) or []
    if len(values) > 1:
        checker.fail(name, f"The {name} parameter may be given only once.")
    return values[0] if values else None


def parse_check(query: dict[str, list[str]]) -> tuple[Feature, int]:
    checker = Checker({})
    name, text = single(query, "feature", checker), single(query, "quantity", checker)
    feature: Feature | Missing = MISSING
    if name is None:
        checker.fail("feature", "The feature field is required.")
    elif name not in FEATURES:
        checker.fail("feature", f"The feature must be one of: {', '.join(FEATURE_NAMES)}.")
    else:
        feature = FEATURES[name]
    quantity = 1
    if text is not None:
        try:
            quantity = parse_int(text, 1, QUANTITY_MAX)
        except ValueError:
            checker.fail("quantity", f"The quantity must be an integer between 1 and {QUANTITY_MAX}.")
    checker.done()
    return required(feature), quantity


def check_view(counter: Counter, used: int, quantity: int, upgrade_url: str) -> dict:
    available = max(counter.limit - used, 0)
    if used + quantity <= counter.limit:
        return {
            "allowed": True,
            "feature": counter.feature.key,
            "current_usage": used,
            "limit": counter.limit,
            "available": available,
        }
    return {
        "allowed": False,
        "feature": counter.feature.key,
        "reason": "LIMIT_EXCEEDED",
        "message": limit_message(counter.feature, used, counter.limit),
        "current_usage": used,
        "limit": counter.limit,
        "available": available,
        "upgrade_url": upgrade_url,
    }


async def check_entitlement(call: Call) -> Response:
    feature, quantity = parse_check(call.request.query)
    ledger = call.services.entitlements
    plan = await ledger.plans.get(call.principal.workspace_id)
    counter = counter_for(call.principal.workspace_id, feature, plan, datetime.now(UTC))
    [used] = await ledger.read_usage([counter])
    return json_response(200, check_view(counter, used, quantity, call.settings.upgrade_url))


# --- POST /entitlements/usage ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    feature: Feature
    quantity: int
    metadata: dict | None
    event_id: str | None


def parse_usage(data: dict) -> Usage:
    if data.get("metadata", 0) is None:
        data = {k: v for k, v in data.items() if k != "metadata"}  # null: no metadata
    checker = Checker(data, allowed=("feature", "quantity", "metadata", "event_id"))
    name = checker.choice("feature", FEATURE_NAMES, required=True)
    quantity = checker.integer("quantity", minimum=-QUANTITY_MAX, maximum=QUANTITY_MAX)
    metadata = checker.object("metadata")
    event_id = checker.string("event_id", max_len=EVENT_ID_MAX)
    if "quantity" not in data:
        quantity = 1
    if quantity == 0:
        checker.fail("quantity", "The quantity must not be 0.")
    elif present(quantity) and quantity < 0 and present(name) and FEATURES[name].metered:
        checker.fail("quantity", f"The quantity must be at least 1: {name} is metered and cannot be given back.")
    size = json_size(metadata) if present(metadata) else 0
    if size is None or size > METADATA_MAX_BYTES:  # None: nested too deep to encode
        checker.fail("metadata", f"The metadata may not be larger than {METADATA_MAX_BYTES} bytes as JSON.")
    checker.done()
    return Usage(
        FEATURES[required(name)],
        required(quantity),  # absent is 1; refused, done() raised
        metadata if present(metadata) else None,
        event_id if present(event_id) else None,
    )


def usage_event(counter: Counter, usage: Usage, applied: int, now: datetime, key: bytes | None) -> dict:
    """The usage record in its wire form (ingest/events.py): the columns of ClickHouse's usage_events.
    `key`: the request's Idempotency-Key, if it has one."""
    return {
        "event_id": record_id(counter, usage.event_id, now),
        "workspace_id": counter.workspace_id,
        "feature": counter.feature.key,
        "quantity": applied,
        "metadata": "" if usage.metadata is None else orjson.dumps(usage.metadata).decode(),
        "idempotency_key": "" if key is None else key.decode("ascii", "replace"),
        "occurred_at": ch_time(utc_ms(now)),
    }


def usage_view(counter: Counter, outcome: Outcome) -> dict:
    body = {"recorded": True, "feature": counter.feature.key, "current_usage": outcome.used, "limit": counter.limit}
    if counter.reset_at is not None:
        body["reset_at"] = iso(counter.reset_at)
    if outcome.status is not QuotaStatus.ACCEPTED:
        body["duplicate"] = True
    return body


async def record_usage(call: Call) -> Response:
    usage = parse_usage(await read_json_object(call.request, call.settings.max_body_bytes))
    ledger = call.services.entitlements
    workspace_id, now = call.principal.workspace_id, datetime.now(UTC)
    counter = counter_for(workspace_id, usage.feature, await ledger.plans.get(workspace_id), now)
    marker = None if usage.event_id is None else marker_key(workspace_id, usage.feature.key, usage.event_id)
    outcome = await ledger.consume(counter, usage.quantity, marker)
    if outcome.status is QuotaStatus.REFUSED:
        await ledger.announce_limit_reached(counter, outcome.used, now)
        raise FeatureLimitReached(usage.feature.key, call.settings.upgrade_url)
    if outcome.status is QuotaStatus.ACCEPTED:
        key = call.request.get_first_header(b"idempotency-key")
        await ledger.make_durable(counter, marker, usage_event(counter, usage, outcome.applied, now, key))
    return json_response(200, usage_view(counter, outcome))


# --- GET /entitlements/summary -----------------------------------------------------------


def summary_entry(counter: Counter, used: int) -> dict:
    entry: dict[str, object] = {
        "used": used,
        "limit": counter.limit,
        "available": max(counter.limit - used, 0),
        "percentage": percentage(used, counter.limit),
    }
    if counter.reset_at is not None:
        entry["reset_at"] = iso(counter.reset_at)
    if counter.feature.unit is not None:
        entry["unit"] = counter.feature.unit
    return entry


async def get_usage_summary(call: Call) -> Response:
    ledger = call.services.entitlements
    workspace_id, now = call.principal.workspace_id, datetime.now(UTC)
    plan = await ledger.plans.get(workspace_id)
    counters = [counter_for(workspace_id, feature, plan, now) for feature in FEATURES.values()]
    used = await ledger.read_usage(counters)
    entries = {c.feature.key: summary_entry(c, u) for c, u in zip(counters, used, strict=True)}
    return json_response(200, {"data": {"workspace_id": workspace_id, "tier": plan.tier, "entitlements": entries}})


USAGE_BODY = {
    "type": "object",
    "required": ["feature"],
    "properties": {
        "feature": {"type": "string", "enum": list(FEATURE_NAMES)},
        "quantity": {
            "type": "integer",
            "minimum": -QUANTITY_MAX,
            "maximum": QUANTITY_MAX,
            "default": 1,
            "description": "Non-zero; negative gives stock back (never below 0); metered: at least 1",
        },
        "metadata": {"type": ["object", "null"], "description": f"At most {METADATA_MAX_BYTES} bytes as JSON"},
        "event_id": {
            "type": "string",
            "maxLength": EVENT_ID_MAX,
            "description": "Client id of this usage: a repeat within 24 h is not counted again",
        },
    },
}
BASE = "/api/v1/entitlements"
ROUTES = [
    Route(
        "GET",
        BASE + "/check",
        check_entitlement,
        "entitlements:read",
        "Would using a quantity of a feature stay within the limit? (changes nothing)",
        "Entitlements",
        query=("feature", "quantity"),
        errors=(422, 503),
    ),
    Route(
        "POST",
        BASE + "/usage",
        record_usage,
        "entitlements:write",
        "Record usage of a feature: counted atomically, refused past the limit",
        "Entitlements",
        body=USAGE_BODY,
        errors=(422, 503),
    ),
    Route(
        "GET",
        BASE + "/summary",
        get_usage_summary,
        "entitlements:read",
        "Usage, limit and reset time of every feature of the workspace",
        "Entitlements",
        errors=(503,),
    ),
]
