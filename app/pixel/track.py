"""HTTP: the pixel — /api/v1/pixel/config, /api/v1/pixel/track (POST, GET 1×1 GIF, OPTIONS) and /pixel.js.

A track request goes: read the body (413) → admit the client's IP (one Redis round trip, or the
local limiter while Redis is away) → validate each event (app/pixel/validation.py) → find its
site from the URL's host (app/pixel/sites.py, in memory) → drop bots and sampled-out events → enrich
(app/pixel/enrichment.py) → hand the accepted ones to the durable producer in one call → answer.
Whatever is not accepted is counted by reason (ingest/handoff/drops.py).
"""

import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from blacksheep import Content, Response
from redis.exceptions import RedisError

from app.http.bodies import read_body
from app.http.client_ip import ip_digest, parse_networks, request_client_address
from app.pixel.domains import normalise_host
from app.pixel.enrichment import Arrival, enrich, sample_point, url_host
from app.http.errors import (ApiError, DomainNotVerified, OriginNotAllowed, UnknownDomain, ValidationFailed,
                        json_response)
from app.pixel.validation import (USER_AGENT_MAX, TrackedInput, body_source, check_event, parse_events,
                                  query_event)
from app.access.rate_limits import LocalLimiter, RedisHealth, rate_limit_headers
from app.http.routing import Call, Route, rate_limited
from app.pixel.sites import MISSING, Site, SiteCache, Unserved
from ingest.handoff.drops import DropCounter
from ingest.events import PixelEvent, Topics, now_ms, workspace_key
from ingest.handoff.producer import SpoolFull
from storage.redis.rate_limit import RateLimiter, limiter_key
from storage.redis.salts import DailySalts

DAY_MS = 86_400_000
# The smallest transparent GIF (43 bytes): what an <img> pixel expects back.
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
       b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
SCRIPT = (Path(__file__).parent / "pixel.js").read_bytes()
DROP_REASON = b"X-Sluice-Drop-Reason"
NO_STORE = [(b"Cache-Control", b"no-store, no-cache, must-revalidate, max-age=0"), (b"Pragma", b"no-cache")]
SCRIPT_HEADERS = [(b"Cache-Control", b"public, max-age=86400"), (b"Access-Control-Allow-Origin", b"*")]
# Browsers cache a preflight answer this long (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE = b"86400"
TRACKED = orjson.dumps({"tracked": True})
# What a browser sends as Origin for a page: scheme://host[:port], nothing after it.
ORIGIN = re.compile(r"(https?)://([^/:?#@\[\]\s]+)(?::([0-9]{1,5}))?")
DEFAULT_PORTS = {"http": 80, "https": 443}
VARY_ORIGIN = (b"Vary", b"Origin")


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1.5 µs more per event
class Outcome:
    """What became of one event: accepted (event set), dropped or rejected (error set)."""

    status: str  # accepted | dropped | rejected
    reason: str = ""  # the drop reason (ingest/handoff/drops.py REASONS) unless accepted
    workspace_id: int = 0
    event: PixelEvent | None = None
    error: ApiError | None = None

    def result(self, index: int) -> dict:
        if self.status == "accepted":
            return {"index": index, "status": "accepted", "event_id": self.event.event_id}
        if self.status == "dropped":
            return {"index": index, "status": "dropped", "reason": self.reason}
        return {"index": index, "status": "rejected", **self.error.body()}


class Pixel:
    """The pixel's state for the process's lifetime: site cache, salts, limiters, drop counts."""

    def __init__(self, settings, pool, redis, producer, health: RedisHealth | None = None):
        """`health`: the process's view of Redis, shared with the API keys' limiter (app/http/metrics.py)."""
        self.settings = settings
        self.producer = producer
        self.topics = Topics.with_prefix(settings.kafka_topic_prefix)
        self.sites = SiteCache(pool, settings.pixel_config_cache_seconds)
        self.salts = DailySalts(redis)
        self.limiter = RateLimiter(redis) if settings.rate_limits else None
        self.local = LocalLimiter(settings.workers)
        self.health = health or RedisHealth()
        self.trusted = parse_networks(settings.trusted_proxies)
        self.drops = DropCounter(producer, self.topics.dropped)
        self._day = (-1, "")
        self.accepted = 0  # events made durable and answered 2xx, for /metrics

    def start(self) -> None:
        self.drops.start()

    async def stop(self) -> None:
        await self.drops.stop()

    async def arrival(self, request, source: str) -> Arrival:
        received = now_ms()
        header = request.get_first_header(b"user-agent") or b""
        user_agent = header.decode("latin-1")[:USER_AGENT_MAX]
        address = request_client_address(request, self.trusted)
        day = self._day_text(received)
        salt = self.salts.cached(day)  # a Redis round trip once a day, not a coroutine per request
        return Arrival(received, address, user_agent, source, salt if salt is not None else await self.salts.for_day(day))

    def _day_text(self, received_ms: int) -> str:
        day = received_ms // DAY_MS
        if self._day[0] != day:
            self._day = (day, time.strftime("%Y-%m-%d", time.gmtime(day * 86_400)))
        return self._day[1]

    async def admit(self, arrival: Arrival):
        """The per-IP decision; the key is a keyed hash of the address, never the address."""
        if self.limiter is None:
            return None
        key = limiter_key("pixel", ip_digest(arrival.address, arrival.salt))
        limit = self.settings.pixel_rate_limit
        if self.health.usable():
            try:
                decision = await self.limiter.allow(key, limit, limit)
                self.health.succeeded()
                return decision
            except (RedisError, OSError) as exc:
                self.health.failed(exc)
        self.health.fallback_requests += 1
        return self.local.allow(key, limit, limit)

    async def judge(self, data, arrival: Arrival) -> Outcome:
        checked = check_event(data)
        if not isinstance(checked, TrackedInput):
            return Outcome("rejected", "invalid", self.known_workspace(data), error=ValidationFailed(checked))
        site = self.sites.fresh(checked.host)
        if site is MISSING:
            site = await self.sites.find(checked.host)
        if site.__class__ is not Site:
            error = DomainNotVerified(checked.host) if site is Unserved.CONTESTED else UnknownDomain(checked.host)
            return Outcome("rejected", "unknown_domain", error=error)
        if not site.enabled or not wanted(site, checked.event):
            return Outcome("dropped", "disabled", site.workspace_id)
        event = enrich(checked, site.workspace_id, arrival)
        if event.is_bot and not self.settings.pixel_keep_bots:
            return Outcome("dropped", "bot", site.workspace_id)
        point = checked.sample_key if checked.sample_key is not None else sample_point(event.visitor_id)
        if point >= site.sample_rate:
            return Outcome("dropped", "sampled_out", site.workspace_id)
        return Outcome("accepted", workspace_id=site.workspace_id, event=event)

    def known_workspace(self, data) -> int:
        """The workspace an unusable event was meant for, if its URL names a cached site."""
        url = data.get("url") if isinstance(data, dict) else None
        site = self.sites.peek(url_host(url)) if isinstance(url, str) and len(url) <= 2048 else None
        return site.workspace_id if site is not None else 0

    async def deliver(self, outcomes: list[Outcome], source: str) -> None:
        """Accepted events to Kafka (or the spool) in one call; raises SpoolFull."""
        events = [o.event for o in outcomes if o.event is not None]
        if not events:
            return
        records = [(workspace_key(e.workspace_id), e.encode()) for e in events]
        try:
            await self.producer.send_many(self.topics.pixel, records)
        except SpoolFull:
            for event in events:
                self.drops.add(event.workspace_id, "spool_full", source)
            raise
        self.accepted += len(events)

    def count(self, outcomes: list[Outcome], source: str) -> None:
        for outcome in outcomes:
            if outcome.status != "accepted":
                self.drops.add(outcome.workspace_id, outcome.reason, source)


def wanted(site: Site, event: str) -> bool:
    """The site's features: "pageview" events need pageviews on, any other event needs events on."""
    return site.pageviews if event == "pageview" else site.events


def site_host(scheme: str, host: str | None, port: int | None) -> str | None:
    """The host of a page a site's pixel may answer: http or https on that scheme's own port, and
    a host name exactly as it would be registered (lowercase, punycode, no trailing dot)."""
    if scheme not in DEFAULT_PORTS or port not in (None, DEFAULT_PORTS[scheme]) or not host:
        return None
    return host if normalise_host(host) == host else None


@functools.lru_cache(maxsize=4096)  # a site's visitors send the same few origins
def origin_site_host(origin: bytes) -> str | None:
    """The host of an Origin header, if it is `https://<host>` or `http://<host>` (never `null`:
    sandboxed frames and file: pages, which any site can produce, are nobody's)."""
    match = ORIGIN.fullmatch(origin.decode("latin-1"))
    if match is None:
        return None
    scheme, host, port = match.groups()
    return site_host(scheme, host, int(port) if port else None)


def referer_site_host(referer: bytes) -> str | None:
    try:
        parts = urlsplit(referer.decode("latin-1"))
        return site_host(parts.scheme, parts.hostname, parts.port)
    except ValueError:  # a port out of range or not a number
        return None


async def cors_headers(pixel: Pixel, request) -> list[tuple[bytes, bytes]]:
    """Access-Control-Allow-Origin for an Origin whose host a site serves (app/pixel/sites.py), else nothing."""
    origin = request.get_first_header(b"origin")
    host = origin_site_host(origin) if origin is not None else None
    if host is None:
        return [VARY_ORIGIN]
    site = pixel.sites.fresh(host)
    if site is MISSING:
        site = await pixel.sites.find(host)
    if site.__class__ is not Site:
        return [VARY_ORIGIN]
    return [(b"Access-Control-Allow-Origin", origin), VARY_ORIGIN]


async def admit_or_refuse(call: Call, pixel: Pixel, arrival: Arrival, events) -> None:
    """429 when the client's IP is over its limit; `events` (a callable) are counted as rate_limited."""
    decision = await pixel.admit(arrival)
    if decision is None or decision.allowed:
        return
    refused = events()
    for data in refused if isinstance(refused, list) else [refused]:
        pixel.drops.add(pixel.known_workspace(data), "rate_limited", arrival.source)
    call.request.extra_headers += rate_limit_headers(decision, "pixel") + [(DROP_REASON, b"rate_limited")]
    raise rate_limited(decision)


def peek_events(raw: bytes):
    """The events of a body for counting a refusal (no validation); [] when unreadable."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []


async def track_event(call: Call) -> Response:
    pixel, request = call.services.pixel, call.request
    request.extra_headers = await cors_headers(pixel, request)
    source = body_source(request.get_first_header(b"content-type"))
    raw = await read_body(request, call.settings.max_body_bytes)
    arrival = await pixel.arrival(request, source)
    await admit_or_refuse(call, pixel, arrival, lambda: peek_events(raw))
    items, batch = parse_events(raw, call.settings.pixel_max_batch)
    if batch and source == "json":
        arrival = Arrival(arrival.received_ms, arrival.address, arrival.user_agent, "batch", arrival.salt)
    outcomes = [await pixel.judge(item, arrival) for item in items]
    await pixel.deliver(outcomes, arrival.source)
    pixel.count(outcomes, arrival.source)
    if batch:
        return batch_response(request, outcomes)
    return single_response(request, outcomes[0], json_body=True)


async def track_gif(call: Call) -> Response:
    pixel, request = call.services.pixel, call.request
    request.extra_headers = list(NO_STORE)
    arrival = await pixel.arrival(request, "gif")
    referer = request.get_first_header(b"referer")
    data = query_event(request.query, referer.decode("latin-1") if referer else None)
    await admit_or_refuse(call, pixel, arrival, lambda: data)
    outcome = await pixel.judge(data, arrival)
    await pixel.deliver([outcome], "gif")
    pixel.count([outcome], "gif")
    return single_response(request, outcome, json_body=False)


def single_response(request, outcome: Outcome, json_body: bool) -> Response:
    if outcome.status == "rejected":
        request.extra_headers.append((DROP_REASON, outcome.reason.encode()))
        raise outcome.error
    if outcome.status == "dropped":
        request.extra_headers.append((DROP_REASON, outcome.reason.encode()))
        body = orjson.dumps({"tracked": False, "reason": outcome.reason})
    else:
        request.extra_headers.append((b"X-Sluice-Event-ID", outcome.event.event_id.encode()))
        body = TRACKED
    content = Content(b"application/json", body) if json_body else Content(b"image/gif", GIF)
    return Response(200, None, content)


def batch_response(request, outcomes: list[Outcome]) -> Response:
    tally = {"accepted": 0, "dropped": 0, "rejected": 0}
    for outcome in outcomes:
        tally[outcome.status] += 1
    reasons = sorted({o.reason for o in outcomes if o.status != "accepted"})
    if reasons:
        request.extra_headers.append((DROP_REASON, ", ".join(reasons).encode()))
    status = 200 if not tally["rejected"] else 422 if tally["rejected"] == len(outcomes) else 207
    return json_response(status, {**tally, "results": [o.result(i) for i, o in enumerate(outcomes)]})


async def preflight_track(call: Call) -> Response:
    headers = await cors_headers(call.services.pixel, call.request)
    if len(headers) == 1:
        raise OriginNotAllowed("This origin is not a site registered for pixel tracking.")
    return Response(204, headers + [
        (b"Access-Control-Allow-Methods", b"POST, GET, OPTIONS"),
        (b"Access-Control-Allow-Headers", b"Content-Type"),
        (b"Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
    ], None)


async def get_pixel_config(call: Call) -> Response:
    """The config of the site asking: by its Origin when it sends one, else by its Referer."""
    request = call.request
    origin, referer = request.get_first_header(b"origin"), request.get_first_header(b"referer")
    host = origin_site_host(origin) if origin is not None else referer_site_host(referer) if referer else None
    site = await call.services.pixel.sites.find(host) if host else None
    headers = [(b"Cache-Control", f"public, max-age={call.settings.pixel_config_cache_seconds}".encode()),
               (b"Vary", b"Origin, Referer")]
    if site.__class__ is not Site:
        return json_response(200, {"enabled": False}, headers)
    if origin is not None:
        headers.append((b"Access-Control-Allow-Origin", origin))
    return json_response(200, site.config(), headers)


async def get_pixel_script(call: Call) -> Response:
    return Response(200, list(SCRIPT_HEADERS), Content(b"application/javascript; charset=utf-8", SCRIPT))


EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "url"],
    "properties": {
        "event": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
        "url": {"type": "string", "format": "uri", "maxLength": 2048},
        "referrer": {"type": "string", "maxLength": 2048},
        "user_agent": {"type": "string", "maxLength": 512},
        "properties": {"type": "object", "description": "≤ 8 KB as JSON, ≤ 3 levels, ≤ 50 keys"},
        "timestamp": {"description": "ISO 8601 date-time or epoch milliseconds", "type": ["string", "integer"]},
        "sample_key": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    },
}
TRACK_BODY = {"oneOf": [EVENT_SCHEMA, {"type": "array", "items": EVENT_SCHEMA, "minItems": 1}]}
BASE = "/api/v1/pixel"
ROUTES = [
    Route("GET", BASE + "/config", get_pixel_config, None, "Pixel configuration of the requesting site", "Pixel"),
    Route("POST", BASE + "/track", track_event, None, "Track an event or a batch (207 per event)", "Pixel",
          body=TRACK_BODY, errors=(400, 413, 422, 429, 503)),
    Route("GET", BASE + "/track", track_gif, None, "Track an event, answered with a 1×1 GIF", "Pixel",
          query=("event", "url", "referrer", "properties", "timestamp"), errors=(422, 429, 503)),
    Route("OPTIONS", BASE + "/track", preflight_track, None, "CORS preflight for registered sites", "Pixel",
          status=204, errors=(403,)),
    Route("GET", "/pixel.js", get_pixel_script, None, "The tracking script", "Pixel"),
    Route("GET", BASE + "/pixel.js", get_pixel_script, None, "The tracking script", "Pixel"),
]
