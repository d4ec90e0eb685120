"""HTTP: /api/v1/entitlements — check a feature, record usage, summarise a workspace's usage.

Limits come from the catalogue (app/resources/features.py) and the workspace's plan: its tier and
limit overrides, read from Postgres and kept in memory for SLUICE_ENTITLEMENTS_CACHE_SECONDS.
Counters live in Redis (storage/redis/quota.py: one atomic script checks and counts); stock
levels are written through to Postgres, which rebuilds them; every accepted record goes to
Kafka through the usage log. Requirements: never over-grant, so Redis away means 503; and a
record that cannot be made durable is taken back and answered 503, never half kept.
"""

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson
from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import FeatureLimitReached, json_response
from app.resources.features import AMOUNT_MAX, FEATURES, Feature, billing_period, limit_for, limit_message, percentage
from app.http.presenters import iso
from app.http.routing import Call, Route
from app.http.validation import Checker, json_size, parse_int, present
from ingest.events import ch_time, utc_ms, workspace_key
from storage.errors import Unavailable
from storage.postgres import entitlements, outbox
from storage.postgres.entitlements import Plan
from storage.redis.quota import ACCEPTED, MISSING, REFUSED, Outcome, QuotaStore, counter_key, marker_key

log = logging.getLogger("sluice.entitlements")

QUANTITY_MAX = AMOUNT_MAX  # see app/resources/features.py: Lua's doubles must count exactly
METADATA_MAX_BYTES = 2048  # the bound on serialized metadata
EVENT_ID_MAX = 100
# A client's event id is remembered as long as an Idempotency-Key is (the spec's 24 hours).
MARKER_TTL_SECONDS = 86_400
# A metered counter outlives its month by a week, so last month's count can still be read.
PERIOD_GRACE = timedelta(days=7)
# Workspaces whose plan one process keeps; past it the cache starts over (bounded memory).
PLAN_CACHE_MAX = 10_000
FEATURE_NAMES = tuple(FEATURES)


class PlanCache:
    """Workspace id → Plan for `ttl` seconds; concurrent misses share one Postgres query."""

    def __init__(self, pool, ttl: int):
        self.pool, self.ttl = pool, ttl
        self.entries: dict[int, tuple[float, Plan]] = {}
        self.loading: dict[int, asyncio.Future] = {}

    async def get(self, workspace_id: int) -> Plan:
        hit = self.entries.get(workspace_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self.loading.get(workspace_id)
        if task is None:
            task = self.loading[workspace_id] = asyncio.ensure_future(self._load(workspace_id))
        # Shielded: one waiter's request being cancelled must not cancel the others' load.
        return await asyncio.shield(task)

    async def _load(self, workspace_id: int) -> Plan:
        try:
            plan = await entitlements.get_plan(self.pool, workspace_id)
        finally:
            del self.loading[workspace_id]
        if len(self.entries) >= PLAN_CACHE_MAX:
            self.entries.clear()
        if self.ttl > 0:
            self.entries[workspace_id] = (time.monotonic() + self.ttl, plan)
        return plan


class Ledger:
    """This stage's per-process state: the quota script (its SHA loaded once) and the plan cache."""

    def __init__(self, services):
        self.redis = services.redis
        self.quota = QuotaStore(services.redis)
        self.plans = PlanCache(services.pool, services.settings.entitlements_cache_seconds)
        # (workspace, feature, month) already announced as limit_reached: a client hammering its
        # limit costs no Postgres write per refusal (the outbox deduplicates across processes).
        self.announced: set[tuple[int, str, str]] = set()


@dataclass(frozen=True, slots=True)
class Counter:
    """One feature of one workspace, now: where it is counted and against what limit."""

    workspace_id: int
    feature: Feature
    key: str
    limit: int
    reset_at: datetime | None  # metered only: the first instant of the next period
    expire_at: int  # unix seconds the Redis counter expires; 0 never (stock)


def counter_place(workspace_id: int, feature: Feature, now: datetime) -> tuple[str, datetime | None, int]:
    """Where a feature's counter lives: (Redis key, reset_at, expire_at in unix seconds; 0 never)."""
    if not feature.metered:
        return counter_key(workspace_id, feature.key), None, 0
    period, reset_at = billing_period(now)
    return counter_key(workspace_id, feature.key, period), reset_at, int((reset_at + PERIOD_GRACE).timestamp())


def counter_for(workspace_id: int, feature: Feature, plan: Plan, now: datetime) -> Counter:
    key, reset_at, expire_at = counter_place(workspace_id, feature, now)
    return Counter(workspace_id, feature, key, limit_for(feature, plan.tier, plan.overrides), reset_at, expire_at)


async def read_usage(call: Call, ledger: Ledger, counters: list[Counter]) -> list[int]:
    """Every counter in one round trip; a stock counter Redis lost is rebuilt from Postgres."""
    values = await ledger.quota.read([c.key for c in counters])
    lost = [c for c, v in zip(counters, values) if v is None and not c.feature.metered]
    if lost:
        stored = await entitlements.stock_usage(call.pool, lost[0].workspace_id, [c.feature.key for c in lost])
        rebuilt = await ledger.quota.rebuild({c.key: stored[c.feature.key] for c in lost})
        values = [rebuilt.get(c.key, v) for c, v in zip(counters, values)]
    return [v or 0 for v in values]


# --- GET /entitlements/check -------------------------------------------------------------

def single(query: dict[str, list[str]], name: str, checker: Checker) -> str | None:
    values = query.get(name) or []
    if len(values) > 1:
        checker.fail(name, f"The {name} parameter may be given only once.")
    return values[0] if values else None


def parse_check(query: dict[str, list[str]]) -> tuple[Feature, int]:
    checker = Checker({})
    name, quantity = single(query, "feature", checker), single(query, "quantity", checker)
    if name is None:
        checker.fail("feature", "The feature field is required.")
    elif name not in FEATURES:
        checker.fail("feature", f"The feature must be one of: {', '.join(FEATURE_NAMES)}.")
    try:
        quantity = 1 if quantity is None else parse_int(quantity, 1, QUANTITY_MAX)
    except ValueError:
        checker.fail("quantity", f"The quantity must be an integer between 1 and {QUANTITY_MAX}.")
    checker.done()
    return FEATURES[name], quantity


def check_view(counter: Counter, used: int, quantity: int, upgrade_url: str) -> dict:
    available = max(counter.limit - used, 0)
    if used + quantity <= counter.limit:
        return {"allowed": True, "feature": counter.feature.key, "current_usage": used,
                "limit": counter.limit, "available": available}
    return {"allowed": False, "feature": counter.feature.key, "reason": "LIMIT_EXCEEDED",
            "message": limit_message(counter.feature, used, counter.limit), "current_usage": used,
            "limit": counter.limit, "available": available, "upgrade_url": upgrade_url}


async def check_entitlement(call: Call) -> Response:
    feature, quantity = parse_check(call.request.query)
    ledger = call.services.entitlements
    plan = await ledger.plans.get(call.principal.workspace_id)
    counter = counter_for(call.principal.workspace_id, feature, plan, datetime.now(timezone.utc))
    [used] = await read_usage(call, ledger, [counter])
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
    return Usage(FEATURES[name], quantity, metadata if present(metadata) else None,
                 event_id if present(event_id) else None)


async def consume(call: Call, ledger: Ledger, counter: Counter, quantity: int, marker: str | None) -> Outcome:
    """Count atomically; a stock counter Redis lost is rebuilt from Postgres on the way."""
    async def attempt(start_from: int | None) -> Outcome:
        return await ledger.quota.consume(counter.key, marker, quantity, counter.limit, start_from=start_from,
                                          expire_at=counter.expire_at, marker_ttl=MARKER_TTL_SECONDS)

    outcome = await attempt(0 if counter.feature.metered else None)
    if outcome.status == MISSING:
        stored = await entitlements.stock_usage(call.pool, counter.workspace_id, [counter.feature.key])
        outcome = await attempt(stored[counter.feature.key])
    return outcome


def record_id(counter: Counter, event_id: str | None, now: datetime) -> str:
    if event_id is not None:
        # The same client event always maps to the same record: the log can deduplicate too.
        digest = hashlib.sha256(f"{counter.workspace_id}:{counter.feature.key}:{event_id}".encode())
        return "use_" + digest.hexdigest()[:32]
    return f"use_{int(now.timestamp() * 1000):012x}{os.urandom(10).hex()}"  # time-ordered, as UUIDv7


def usage_event(call: Call, counter: Counter, usage: Usage, applied: int, now: datetime) -> dict:
    """The usage record in its wire form (ingest/events.py): the columns of ClickHouse's usage_events."""
    key = call.request.get_first_header(b"idempotency-key")
    return {
        "event_id": record_id(counter, usage.event_id, now),
        "workspace_id": counter.workspace_id,
        "feature": counter.feature.key,
        "quantity": applied,
        "metadata": "" if usage.metadata is None else orjson.dumps(usage.metadata).decode(),
        "idempotency_key": "" if key is None else key.decode("ascii", "replace"),
        "occurred_at": ch_time(utc_ms(now)),
    }


async def publish(call: Call, event: dict) -> None:
    """Durable once this returns: acknowledged by Kafka or fsync'd to the spool (ingest/handoff/producer.py)."""
    # SpoolFull (Kafka away and the spool full) leaves as a 503 through app/http/errors.py.
    topic = call.services.topics.usage
    await call.services.producer.send(topic, workspace_key(event["workspace_id"]), orjson.dumps(event))


async def make_durable(call: Call, ledger: Ledger, counter: Counter, marker: str | None, event: dict) -> None:
    """Stock level to Postgres, then the record to Kafka; on any failure take the count back."""
    applied, written = event["quantity"], False
    try:
        if not counter.feature.metered:
            await entitlements.add_usage(call.pool, counter.workspace_id, counter.feature.key, applied)
            written = True
        await publish(call, event)
    except Exception:
        await take_back(call, ledger, counter, marker, applied, written)
        raise


async def take_back(call: Call, ledger: Ledger, counter: Counter, marker: str | None, applied: int,
                    written: bool) -> None:
    # Each undo on its own: one failing must not keep the other from running. What cannot be
    # undone leaves the counter over-counting, which refuses too early but never over-grants.
    try:
        await ledger.quota.release(counter.key, marker, applied)
    except Unavailable:
        log.error("could not release %d %s of workspace %d in Redis", applied, counter.feature.key,
                  counter.workspace_id)
    if written:
        try:
            await entitlements.add_usage(call.pool, counter.workspace_id, counter.feature.key, -applied)
        except Unavailable:
            log.error("could not undo %d %s of workspace %d in Postgres", applied, counter.feature.key,
                      counter.workspace_id)


def usage_view(counter: Counter, outcome: Outcome) -> dict:
    body = {"recorded": True, "feature": counter.feature.key, "current_usage": outcome.used, "limit": counter.limit}
    if counter.reset_at is not None:
        body["reset_at"] = iso(counter.reset_at)
    if outcome.status != ACCEPTED:
        body["duplicate"] = True
    return body


async def announce_limit_reached(call: Call, counter: Counter, used: int, now: datetime) -> None:
    """entitlement.limit_reached for webhooks, at most once per workspace, feature and calendar
    month (stock features too, so a workspace at its limit is not told on every refusal). The
    refusal stands even if the event cannot be written: it is logged, not raised."""
    period = billing_period(now)[0]
    seen, mark = call.services.entitlements.announced, (counter.workspace_id, counter.feature.key, period)
    if mark in seen:
        return
    try:
        await outbox.emit_limit_reached(call.pool, counter.workspace_id, counter.feature.key, used, counter.limit,
                                        period, counter.reset_at)
        seen.add(mark)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the refusal is the answer
        log.error("could not record entitlement.limit_reached for workspace %d, %s: %s", counter.workspace_id,
                  counter.feature.key, exc)


async def record_usage(call: Call) -> Response:
    usage = parse_usage(await read_json_object(call.request, call.settings.max_body_bytes))
    ledger = call.services.entitlements
    workspace_id, now = call.principal.workspace_id, datetime.now(timezone.utc)
    counter = counter_for(workspace_id, usage.feature, await ledger.plans.get(workspace_id), now)
    marker = None if usage.event_id is None else marker_key(workspace_id, usage.feature.key, usage.event_id)
    outcome = await consume(call, ledger, counter, usage.quantity, marker)
    if outcome.status == REFUSED:
        await announce_limit_reached(call, counter, outcome.used, now)
        raise FeatureLimitReached(usage.feature.key, call.settings.upgrade_url)
    if outcome.status == ACCEPTED:
        await make_durable(call, ledger, counter, marker, usage_event(call, counter, usage, outcome.applied, now))
    return json_response(200, usage_view(counter, outcome))


# --- GET /entitlements/summary -----------------------------------------------------------

def summary_entry(counter: Counter, used: int) -> dict:
    entry = {"used": used, "limit": counter.limit, "available": max(counter.limit - used, 0),
             "percentage": percentage(used, counter.limit)}
    if counter.reset_at is not None:
        entry["reset_at"] = iso(counter.reset_at)
    if counter.feature.unit is not None:
        entry["unit"] = counter.feature.unit
    return entry


async def get_usage_summary(call: Call) -> Response:
    ledger = call.services.entitlements
    workspace_id, now = call.principal.workspace_id, datetime.now(timezone.utc)
    plan = await ledger.plans.get(workspace_id)
    counters = [counter_for(workspace_id, feature, plan, now) for feature in FEATURES.values()]
    used = await read_usage(call, ledger, counters)
    entries = {c.feature.key: summary_entry(c, u) for c, u in zip(counters, used)}
    return json_response(200, {"data": {"workspace_id": workspace_id, "tier": plan.tier, "entitlements": entries}})


USAGE_BODY = {
    "type": "object",
    "required": ["feature"],
    "properties": {
        "feature": {"type": "string", "enum": list(FEATURE_NAMES)},
        "quantity": {"type": "integer", "minimum": -QUANTITY_MAX, "maximum": QUANTITY_MAX, "default": 1,
                     "description": "Non-zero; negative gives stock back (never below 0); metered: at least 1"},
        "metadata": {"type": ["object", "null"], "description": f"At most {METADATA_MAX_BYTES} bytes as JSON"},
        "event_id": {"type": "string", "maxLength": EVENT_ID_MAX,
                     "description": "Client id of this usage: a repeat within 24 h is not counted again"},
    },
}
BASE = "/api/v1/entitlements"
ROUTES = [
    Route("GET", BASE + "/check", check_entitlement, "entitlements:read",
          "Would using a quantity of a feature stay within the limit? (changes nothing)", "Entitlements",
          query=("feature", "quantity"), errors=(422, 503)),
    Route("POST", BASE + "/usage", record_usage, "entitlements:write",
          "Record usage of a feature: counted atomically, refused past the limit", "Entitlements",
          body=USAGE_BODY, errors=(422, 503)),
    Route("GET", BASE + "/summary", get_usage_summary, "entitlements:read",
          "Usage, limit and reset time of every feature of the workspace", "Entitlements", errors=(503,)),
]
