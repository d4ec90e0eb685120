"""HTTP: the pixel — /api/v1/pixel/config, /api/v1/pixel/track (POST, GET 1×1 GIF, OPTIONS) and /pixel.js;
with SLUICE_PIXEL_PATH, the same again under that prefix as /c, /e and /s.js.

A track request goes: admit the client's IP (one Redis round trip, or the local limiter while
Redis is away; every answer after it carries the budget's headers) → read the body (413) → with an
Idempotency-Key, run once per key and host (app/http/idempotency.py) → validate each event
(app/pixel/validation.py) → find its site from the URL's host (app/pixel/sites.py, in memory) →
drop bots and sampled-out events → enrich (app/pixel/enrichment.py) → hand the accepted ones to
the sink in one call → answer. Those stages are app/pixel/intake.py's; this module parses requests
and shapes answers. Whatever is not accepted is counted by reason (ingest/handoff/drops.py).
"""

import dataclasses
import functools
import re
from typing import NoReturn
from urllib.parse import urlsplit

import orjson
from blacksheep import Content, Request, Response

from app.access.rate_limits import rate_limit_headers, rate_limited
from app.http.bodies import read_body
from app.http.errors import OriginNotAllowed, ValidationFailed, json_response
from app.http.idempotency import IDEMPOTENCY_KEY, idempotency_key, run_idempotently_in
from app.http.routing import PublicCall, Route
from app.http.shapes import Boolean, Choice, Free, Integer, List, Number, Object, Text, response
from app.pixel import domains
from app.pixel.domains import normalise_host
from app.pixel.enrichment import Arrival
from app.pixel.intake import Accepted, Dropped, Outcome, Pixel, Rejected, Verdict
from app.pixel.script import SCRIPT
from app.pixel.sites import Site, Unserved
from app.pixel.validation import (
    MAX_BATCH,
    Declared,
    TrackBody,
    body_source,
    gif_query,
    page_host,
    parse_events,
    query_event,
)
from ingest.events import DropReason
from storage.redis.rate_limit import Decision

# The smallest transparent GIF (43 bytes): what an <img> pixel expects back.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
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
POLICY = "pixel"  # the per-IP budget's name in RateLimit-Policy: track, the GIF and config share it


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


async def cors_headers(pixel: Pixel, request: Request) -> list[tuple[bytes, bytes]]:
    """Access-Control-Allow-Origin for an Origin whose host a site serves (app/pixel/sites.py), else nothing."""
    origin = request.get_first_header(b"origin")
    host = origin_site_host(origin) if origin is not None else None
    if origin is None or host is None:
        return [VARY_ORIGIN]
    site = pixel.sites.fresh(host)
    if site is None:
        site = await pixel.sites.find(host)
    if isinstance(site, Unserved):
        return [VARY_ORIGIN]
    return [(b"Access-Control-Allow-Origin", origin), VARY_ORIGIN]


async def admit(call: PublicCall, pixel: Pixel, arrival: Arrival) -> Decision | None:
    """The client IP's decision (None: limits are off); its headers go on whatever answers."""
    admitted = await pixel.admit(arrival)
    if admitted is None:
        return None
    decision, mode = admitted
    call.context.response_headers += rate_limit_headers(decision, POLICY, mode)
    return decision


def refuse(call: PublicCall, pixel: Pixel, decision: Decision, events, source: str) -> NoReturn:
    """429 for a client over its limit; its events are counted as rate_limited."""
    for data in events if isinstance(events, list) else [events]:
        pixel.drops.add(pixel.known_workspace(data), DropReason.RATE_LIMITED, source)
    call.context.response_headers.append((DROP_REASON, b"rate_limited"))
    raise rate_limited(decision)


def peek_events(raw: bytes):
    """The events of a body for counting a refusal (no validation); [] when unreadable."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []


async def track_event(call: PublicCall) -> Response:
    pixel, request, headers = call.services.pixel, call.request, call.context.response_headers
    headers += await cors_headers(pixel, request)
    arrival = await pixel.arrival(request, "json")
    decision = await admit(call, pixel, arrival)
    source = body_source(request.get_first_header(b"content-type"))
    raw = await read_body(request, call.settings.max_body_bytes)
    if decision is not None and not decision.allowed:
        refuse(call, pixel, decision, peek_events(raw), source)
    items, batch = parse_events(raw, call.settings.pixel_max_batch)
    if batch and source == "json":
        source = "batch"
    if source != "json":
        arrival = dataclasses.replace(arrival, source=source)
    if request.get_first_header(IDEMPOTENCY_KEY) is None:
        return await answer_events(pixel, headers, items, batch, arrival)

    async def run(_call: PublicCall) -> Response:
        return await answer_events(pixel, headers, items, batch, arrival)

    # Kept per host: the first event's with a page URL. With none, no event can be accepted, so
    # there is nothing to run once (a malformed key is still refused).
    scope = next((host for host in map(page_host, items) if host), None)
    if scope is None:
        idempotency_key(request)
        return await run(call)
    return await run_idempotently_in(call, scope, run)


async def answer_events(
    pixel: Pixel, headers: list[tuple[bytes, bytes]], items: list, batch: bool, arrival: Arrival
) -> Response:
    """Judge each event, hand the accepted ones over, count the rest, answer."""
    outcomes = [await pixel.judge(item, arrival) for item in items]
    await pixel.deliver(outcomes, arrival.source)
    pixel.count(outcomes, arrival.source)
    if batch:
        return batch_response(headers, outcomes)
    return single_response(headers, outcomes[0], json_body=True)


async def track_gif(call: PublicCall) -> Response:
    pixel, request, headers = call.services.pixel, call.request, call.context.response_headers
    headers += NO_STORE
    arrival = await pixel.arrival(request, "gif")
    decision = await admit(call, pixel, arrival)
    referer = request.get_first_header(b"referer")
    data = query_event(request.query, referer.decode("latin-1") if referer else None)
    if decision is not None and not decision.allowed:
        refuse(call, pixel, decision, data, "gif")
    outcome = await pixel.judge(data, arrival)
    await pixel.deliver([outcome], "gif")
    pixel.count([outcome], "gif")
    return single_response(headers, outcome, json_body=False)


def single_response(headers: list[tuple[bytes, bytes]], outcome: Outcome, json_body: bool) -> Response:
    """`headers`: the request's extra response headers (Call.context), which the error envelope gets too."""
    if isinstance(outcome, Rejected):
        headers.append((DROP_REASON, outcome.reason.encode()))
        raise outcome.error
    if isinstance(outcome, Dropped):
        headers.append((DROP_REASON, outcome.reason.encode()))
        body = orjson.dumps({"tracked": False, "reason": outcome.reason})
    else:
        headers.append((b"X-Sluice-Event-ID", outcome.event.event_id.encode()))
        body = TRACKED
    content = Content(b"application/json", body) if json_body else Content(b"image/gif", GIF)
    return Response(200, None, content)


def batch_response(headers: list[tuple[bytes, bytes]], outcomes: list[Outcome]) -> Response:
    """200 when every event is accepted or dropped, 207 when some are rejected; when all are, the
    error envelope of the batch (422 if any is invalid, else 403) with the same counts and results."""
    tally = {"accepted": 0, "dropped": 0, "rejected": 0}  # Verdict's values, in the answer's order
    for outcome in outcomes:
        tally[outcome.status] += 1
    reasons = sorted({o.reason for o in outcomes if not isinstance(o, Accepted)})
    if reasons:
        headers.append((DROP_REASON, ", ".join(reasons).encode()))
    results = [o.result(i) for i, o in enumerate(outcomes)]
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    if len(rejected) < len(outcomes):
        return json_response(207 if rejected else 200, {**tally, "results": results})
    status, envelope = batch_refusal(rejected)
    return json_response(status, {**envelope, **tally, "results": results})


def batch_refusal(rejected: list[Rejected]) -> tuple[int, dict]:
    """The status and envelope of a batch whose every event is rejected: the first invalid event's,
    with every invalid event's messages under `errors` ("<index>.<field>"), else the first event's."""
    invalid = {i: r.error for i, r in enumerate(rejected) if isinstance(r.error, ValidationFailed)}
    first = next(iter(invalid.values()), rejected[0].error)
    envelope: dict = {
        "error": first.code,
        "message": f"None of the {len(rejected)} events was accepted; each result says why.",
    }
    if invalid:
        envelope["errors"] = {
            f"{i}.{name}": messages for i, error in invalid.items() for name, messages in error.extra["errors"].items()
        }
    return first.status, envelope


async def preflight_track(call: PublicCall) -> Response:
    headers = await cors_headers(call.services.pixel, call.request)
    if len(headers) == 1:
        raise OriginNotAllowed("This origin is not a site registered for pixel tracking.")
    return Response(
        204,
        headers
        + [
            (b"Access-Control-Allow-Methods", b"POST, GET, OPTIONS"),
            (b"Access-Control-Allow-Headers", b"Content-Type"),
            (b"Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
        ],
        None,
    )


async def get_pixel_config(call: PublicCall) -> Response:
    """The config of the site asking: by its Origin when it sends one, else by its Referer. The
    same per-IP budget as track's applies (one Redis round trip)."""
    request, pixel = call.request, call.services.pixel
    decision = await admit(call, pixel, await pixel.arrival(request, "config"))
    if decision is not None and not decision.allowed:
        raise rate_limited(decision)
    origin, referer = request.get_first_header(b"origin"), request.get_first_header(b"referer")
    host = origin_site_host(origin) if origin is not None else referer_site_host(referer) if referer else None
    site = await pixel.sites.find(host) if host else None
    headers = [
        (b"Cache-Control", f"public, max-age={call.settings.pixel_config_cache_seconds}".encode()),
        (b"Vary", b"Origin, Referer"),
    ]
    if site.__class__ is not Site:
        return json_response(200, {"enabled": False}, headers)
    if origin is not None:
        headers.append((b"Access-Control-Allow-Origin", origin))
    return json_response(200, site.config(), headers)


async def get_pixel_script(call: PublicCall) -> Response:
    return Response(200, list(SCRIPT_HEADERS), Content(b"application/javascript; charset=utf-8", SCRIPT))


# -- the answers' shapes ---------------------------------------------------------------------------
COUNT = Integer(0, MAX_BATCH)
INDEX = Integer(0, MAX_BATCH - 1)
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"  # ingest/events.py event_id
DROPPED = Choice([DropReason.DISABLED, DropReason.CONSENT, DropReason.EXCLUDED, DropReason.BOT, DropReason.SAMPLED_OUT])
REJECTIONS = Choice(["validation_failed", "unknown_domain", "domain_not_verified"])
EVENT_RESULT = Declared(
    {
        "oneOf": [
            response({"index": INDEX, "status": Choice([Verdict.ACCEPTED]), "event_id": Text(36, UUID)}),
            response({"index": INDEX, "status": Choice([Verdict.DROPPED]), "reason": DROPPED}),
            response(
                {
                    "index": INDEX,
                    "status": Choice([Verdict.REJECTED]),
                    "error": REJECTIONS,
                    "message": Free("string"),
                    "errors": Free("object", "validation_failed: field → its messages"),
                    "host": Free("string", "unknown_domain, domain_not_verified: the url's host"),
                },
                required=["index", "status", "error", "message"],
            ),
        ]
    }
)
TRACK_ANSWER = {
    "oneOf": [
        response({"tracked": Boolean()}),
        response({"tracked": Boolean(), "reason": DROPPED}),
        response(
            {
                "accepted": COUNT,
                "dropped": COUNT,
                "rejected": COUNT,
                "results": List(EVENT_RESULT, MAX_BATCH, description="One per event, in the batch's order"),
            }
        ),
    ]
}
FEATURES = Object({name: Boolean() for name in domains.FEATURES}, required=domains.FEATURES)
CONFIG_ANSWER = {
    "oneOf": [
        response({"enabled": Boolean()}),  # no site registered for the asking page
        response({"enabled": Boolean(), "features": FEATURES, "sample_rate": Number(0, 1)}),
    ]
}
BASE = "/api/v1/pixel"
ROUTES = [
    Route(
        "GET",
        BASE + "/config",
        get_pixel_config,
        None,
        "Pixel configuration of the requesting site (by its Origin, else its Referer)",
        "Pixel",
        answer=CONFIG_ANSWER,
        errors=(429, 503),
    ),
    Route(
        "POST",
        BASE + "/track",
        track_event,
        None,
        "Track an event or a batch: 403 unknown_domain when no workspace registered the url's host; "
        "207 when some events of a batch are rejected, each result saying why",
        "Pixel",
        body=TrackBody(),
        answer=TRACK_ANSWER,
        also=(207,),
        errors=(400, 403, 413, 422, 429, 503),
    ),
    Route(
        "GET",
        BASE + "/track",
        track_gif,
        None,
        "Track an event, answered with a 1×1 GIF (403 unknown_domain when no workspace registered the url's host)",
        "Pixel",
        query=gif_query(),
        errors=(403, 422, 429, 503),
    ),
    Route(
        "OPTIONS",
        BASE + "/track",
        preflight_track,
        None,
        "CORS preflight for registered sites",
        "Pixel",
        status=204,
        errors=(403,),
    ),
    Route("GET", "/pixel.js", get_pixel_script, None, "The tracking script", "Pixel"),
    Route("GET", BASE + "/pixel.js", get_pixel_script, None, "The tracking script", "Pixel"),
]
# SLUICE_PIXEL_PATH's names for the script, track and config: blockers' lists name pixel.js and /track.
FIRST_PARTY = {BASE + "/pixel.js": "/s.js", BASE + "/track": "/e", BASE + "/config": "/c"}


def first_party_routes(prefix: str) -> list[Route]:
    """The routes of the script, track and config again under `prefix` (none when it is empty): the
    same handlers, so the same limits, CORS and answers. app/main.py registers them without
    documenting them: /openapi.json describes each operation once, at its /api/v1 path."""
    if not prefix:
        return []
    return [dataclasses.replace(r, path=prefix + FIRST_PARTY[r.path]) for r in ROUTES if r.path in FIRST_PARTY]
