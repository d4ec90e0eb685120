"""HTTP: /api/v1/entitlements — check a feature, record usage, summarise a workspace's usage.

Each handler parses its input, asks the ledger (app/resources/ledger.py: counters, plans, durable
usage records) and shapes the answer. Requirements: never over-grant, so Redis away means 503;
and a record that cannot be made durable is taken back and answered 503, never half kept.
Inputs and answers are declared below (app/http/shapes.py); the one rule no schema states, the
metadata's size as JSON, is checked after the body's shape and answered with it.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from blacksheep import Response

from app.access.tiers import TIERS
from app.http.bodies import read_json_object
from app.http.errors import FeatureLimitReached, ValidationFailed, json_response
from app.http.presenters import iso
from app.http.routing import Call, Route
from app.http.shapes import (
    Boolean,
    Choice,
    DateTime,
    Errors,
    Free,
    Integer,
    Nullable,
    Number,
    Object,
    Query,
    Text,
    fail,
    response,
)
from app.http.validation import ID_MAX, MISSING, Missing, json_size
from app.resources.features import AMOUNT_MAX, FEATURES, Feature, limit_message, percentage
from app.resources.ledger import Counter, counter_for, record_id
from ingest.events import ch_time, utc_ms
from storage.redis.quota import Outcome, QuotaStatus, marker_key

QUANTITY_MAX = AMOUNT_MAX  # see app/resources/features.py: Lua's doubles must count exactly
METADATA_MAX_BYTES = 2048  # the issue's bound on serialized metadata
EVENT_ID_MAX = 100
FEATURE_NAMES = tuple(FEATURES)
METERED = [name for name, feature in FEATURES.items() if feature.metered]


class NonZero(Integer):
    """An integer in its bounds other than 0."""

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "not": {"const": 0}}

    def read(self, value: Any, name: str, errors: Errors) -> int | Missing:
        read = super().read(value, name, errors)
        if read == 0:
            return fail(errors, name, f"The {name} must not be 0.")
        return read


class UsageBody(Object):
    """The usage body, whose quantity a metered feature takes only from 1 up: consumption cannot
    be given back. Stated to the document with if/then."""

    def schema(self) -> dict[str, Any]:
        return {
            **super().schema(),
            "if": {"properties": {"feature": {"enum": METERED}}, "required": ["feature"]},
            "then": {"properties": {"quantity": {"minimum": 1}}},
        }

    def read(self, value: Any, name: str, errors: Errors) -> dict[str, Any] | Missing:
        body = super().read(value, name, errors)
        if body is not MISSING and body.get("feature") in METERED and body.get("quantity", 1) < 1:
            feature = body["feature"]
            fail(errors, "quantity", f"The quantity must be at least 1: {feature} is metered and cannot be given back.")
        return body


FEATURE = Choice(FEATURE_NAMES)
CHECK_QUERY = Query(
    {
        "feature": FEATURE,
        "quantity": Integer(1, QUANTITY_MAX, description="The amount to check (default 1)"),
    },
    required=("feature",),
)
USAGE_BODY = UsageBody(
    {
        "feature": FEATURE,
        "quantity": NonZero(
            -QUANTITY_MAX,
            QUANTITY_MAX,
            description="Default 1; a negative quantity gives stock back (never below 0); metered features: at least 1",
        ),
        "metadata": Nullable(
            Free("object"),
            description=f"At most {METADATA_MAX_BYTES} bytes as JSON (422 otherwise); null: none",
        ),
        "event_id": Text(
            EVENT_ID_MAX, description="Client id of this usage: a repeat within 24 h is answered, not counted again"
        ),
    },
    required=("feature",),
)

# The answers.
AMOUNT = Integer(0, AMOUNT_MAX)
ALLOWED = {"allowed": Boolean(), "feature": FEATURE, "current_usage": AMOUNT, "limit": AMOUNT, "available": AMOUNT}
REFUSED = {
    **ALLOWED,
    "reason": Choice(["LIMIT_EXCEEDED"]),
    "message": Text(),
    "upgrade_url": Free("string"),
}
CHECK_ANSWER = {"oneOf": [response(ALLOWED), response(REFUSED)]}
USAGE_ANSWER = response(
    {
        "recorded": Boolean(),
        "feature": FEATURE,
        "current_usage": AMOUNT,
        "limit": AMOUNT,
        "reset_at": DateTime(description="Metered features: when the billing period's count starts again"),
        "duplicate": Boolean(description="Present (true) when this event_id was already counted"),
    },
    required=("recorded", "feature", "current_usage", "limit"),
)


def summary_entry_shape(feature: Feature) -> Object:
    fields = {"used": AMOUNT, "limit": AMOUNT, "available": AMOUNT, "percentage": Number(0, 100 * AMOUNT_MAX)}
    if feature.metered:
        fields["reset_at"] = DateTime()
    if feature.unit is not None:
        fields["unit"] = Choice([feature.unit])
    return Object(fields, required=tuple(fields))


SUMMARY = {
    "workspace_id": Integer(1, ID_MAX),
    "tier": Choice(TIERS),
    "entitlements": Object({name: summary_entry_shape(f) for name, f in FEATURES.items()}, required=FEATURE_NAMES),
}
SUMMARY_ANSWER = response({"data": Object(SUMMARY, required=tuple(SUMMARY))})


# --- GET /entitlements/check -------------------------------------------------------------


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
    query = CHECK_QUERY.parse(call.request)
    feature, quantity = FEATURES[query["feature"]], query.get("quantity", 1)
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
    errors: Errors = {}
    body = USAGE_BODY.read(data, "", errors)
    if body is not MISSING:
        size = json_size(body.get("metadata"))
        if size is None or size > METADATA_MAX_BYTES:  # None: nested too deep to encode
            fail(errors, "metadata", f"The metadata may not be larger than {METADATA_MAX_BYTES} bytes as JSON.")
    if errors or body is MISSING:
        raise ValidationFailed(errors)
    return Usage(FEATURES[body["feature"]], body.get("quantity", 1), body.get("metadata"), body.get("event_id"))


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


BASE = "/api/v1/entitlements"
ROUTES = [
    Route(
        "GET",
        BASE + "/check",
        check_entitlement,
        "entitlements:read",
        "Would using a quantity of a feature stay within the limit? (changes nothing)",
        "Entitlements",
        query=CHECK_QUERY,
        answer=CHECK_ANSWER,
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
        answer=USAGE_ANSWER,
        errors=(422, 503),
    ),
    Route(
        "GET",
        BASE + "/summary",
        get_usage_summary,
        "entitlements:read",
        "Usage, limit and reset time of every feature of the workspace",
        "Entitlements",
        answer=SUMMARY_ANSWER,
        errors=(503,),
    ),
]
