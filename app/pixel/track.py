"""HTTP: the pixel — /api/v1/pixel/config, /api/v1/pixel/track (POST, GET 1×1 GIF, OPTIONS) and /pixel.js.

A track request goes: read the body (413) → admit the client's IP (one Redis round trip, or the
local limiter while Redis is away) → validate each event (app/pixel/validation.py) → find its
site from the URL's host (app/pixel/sites.py, in memory) → drop bots and sampled-out events → enrich
(app/pixel/enrichment.py) → hand the accepted ones to the sink in one call → answer. Those stages
are app/pixel/intake.py's; this module parses requests and shapes answers. Whatever is not accepted
is counted by reason (ingest/handoff/drops.py).
"""

import functools
import re
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from blacksheep import Content, Request, Response

from app.access.rate_limits import rate_limit_headers
from app.http.bodies import read_body
from app.http.errors import OriginNotAllowed, json_response
from app.http.routing import PublicCall, Route, rate_limited
from app.pixel.domains import normalise_host
from app.pixel.enrichment import Arrival
from app.pixel.intake import Accepted, Dropped, Outcome, Pixel, Rejected, Verdict
from app.pixel.sites import Site, Unserved
from app.pixel.validation import body_source, parse_events, query_event
from ingest.events import DropReason

# The smallest transparent GIF (43 bytes): what an <img> pixel expects back.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
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


async def admit_or_refuse(call: PublicCall, pixel: Pixel, arrival: Arrival, events) -> None:
    """429 when the client's IP is over its limit; `events` (a callable) are counted as rate_limited."""
    decision = await pixel.admit(arrival)
    if decision is None or decision.allowed:
        return
    refused = events()
    for data in refused if isinstance(refused, list) else [refused]:
        pixel.drops.add(pixel.known_workspace(data), DropReason.RATE_LIMITED, arrival.source)
    call.context.response_headers += rate_limit_headers(decision, "pixel") + [(DROP_REASON, b"rate_limited")]
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
        return batch_response(headers, outcomes)
    return single_response(headers, outcomes[0], json_body=True)


async def track_gif(call: PublicCall) -> Response:
    pixel, request, headers = call.services.pixel, call.request, call.context.response_headers
    headers += NO_STORE
    arrival = await pixel.arrival(request, "gif")
    referer = request.get_first_header(b"referer")
    data = query_event(request.query, referer.decode("latin-1") if referer else None)
    await admit_or_refuse(call, pixel, arrival, lambda: data)
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
    tally = {"accepted": 0, "dropped": 0, "rejected": 0}  # Verdict's values, in the answer's order
    for outcome in outcomes:
        tally[outcome.status] += 1
    reasons = sorted({o.reason for o in outcomes if not isinstance(o, Accepted)})
    if reasons:
        headers.append((DROP_REASON, ", ".join(reasons).encode()))
    rejected = tally[Verdict.REJECTED]
    status = 200 if not rejected else 422 if rejected == len(outcomes) else 207
    return json_response(status, {**tally, "results": [o.result(i) for i, o in enumerate(outcomes)]})


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
    """The config of the site asking: by its Origin when it sends one, else by its Referer."""
    request = call.request
    origin, referer = request.get_first_header(b"origin"), request.get_first_header(b"referer")
    host = origin_site_host(origin) if origin is not None else referer_site_host(referer) if referer else None
    site = await call.services.pixel.sites.find(host) if host else None
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
    Route(
        "POST",
        BASE + "/track",
        track_event,
        None,
        "Track an event or a batch (207 per event)",
        "Pixel",
        body=TRACK_BODY,
        errors=(400, 413, 422, 429, 503),
    ),
    Route(
        "GET",
        BASE + "/track",
        track_gif,
        None,
        "Track an event, answered with a 1×1 GIF",
        "Pixel",
        query=("event", "url", "referrer", "properties", "timestamp"),
        errors=(422, 429, 503),
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
