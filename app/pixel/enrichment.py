"""Pixel enrichment: a validated event plus what the server knows → the PixelEvent put on Kafka.

Pure functions, no I/O: the server's clock, the client's address and the daily salt come in as
arguments. The raw address never leaves this module: only its /24 (IPv4) or /48 (IPv6) prefix
and a keyed hash that changes every day (the visitor id) do.
"""

import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

from app.pixel.user_agents import parse as parse_agent
from app.pixel.validation import TrackedInput
from ingest.events import PixelEvent, ch_time, event_id

# A client clock further than this behind is taken as wrong (or an event replayed from a
# long-closed tab); its time is clamped so that hourly rollups are not rewritten days later.
MAX_AGE_MS = 24 * 3600 * 1000
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
UTM_MAX = 255  # longer values are tracking junk, not campaign names
IPV4_PREFIX, IPV6_PREFIX = 24, 48
NO_UTM: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the server knows about the request that carried the event(s)."""

    received_ms: int
    address: str  # the client's address (client_ip.py); used here, never stored
    user_agent: str  # the request's User-Agent header, truncated
    source: str  # json | beacon | gif | batch (config: only admitted, never enriched)
    salt: bytes  # today's salt (storage/redis/salts.py)


def clamp_time(client_ms: int | None, received_ms: int) -> int:
    """The event's time: the client's, but never in the future nor older than MAX_AGE_MS."""
    if client_ms is None:
        return received_ms
    return min(received_ms, max(client_ms, received_ms - MAX_AGE_MS))


def ip_prefix(address: str) -> str:
    """IPv4 → its /24 network address, IPv6 → its /48; "" for anything unparseable."""
    try:
        a, b, c, _ = socket.inet_pton(socket.AF_INET, address)  # the common case, in C
        return f"{a}.{b}.{c}.0"
    except OSError:
        return _network_prefix(address)


@lru_cache(maxsize=4096)
def _network_prefix(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False).network_address)


def visitor_id(salt: bytes, workspace_id: int, address: str, user_agent: str) -> str:
    """Same visitor, same site, same day → same id; the next day's salt unlinks it.

    Keyed BLAKE2b (a MAC by design, RFC 7693) rather than HMAC-SHA256: 0.6 µs against 2 µs.
    """
    message = f"{workspace_id}\x00{address}\x00{user_agent}".encode()
    return hashlib.blake2b(message, key=salt, digest_size=16).hexdigest()


def sample_point(visitor: str) -> float:
    """A visitor's fixed point in [0, 1): the server keeps them when it is below sample_rate."""
    return int(visitor[:8], 16) / 2**32


@lru_cache(maxsize=4096)
def url_host(url: str) -> str:
    """The lowercased host of an http(s) URL, without port; "" if it has none.

    Cached: referrers repeat (search engines, the site itself) and urlsplit costs ~2 µs.
    """
    try:
        parts = urlsplit(url)
        return (parts.hostname or "") if parts.scheme in ("http", "https") else ""
    except ValueError:
        return ""


def utm_params(query: str) -> dict[str, str]:
    """The utm_* parameters of a query string (first of each, truncated); do not modify the result."""
    if "utm_" not in query:
        return NO_UTM
    return _utm_params(query)


@lru_cache(maxsize=4096)
def _utm_params(query: str) -> dict[str, str]:
    # Cached: campaign landing URLs repeat, and parse_qsl costs ~2.5 µs.
    found = {}
    for name, value in parse_qsl(query, keep_blank_values=False):
        if name in UTM_FIELDS and name not in found:
            found[name] = value[:UTM_MAX]
    return found


def enrich(item: TrackedInput, workspace_id: int, arrival: Arrival) -> PixelEvent:
    """The wire record of one accepted event."""
    user_agent = item.user_agent or arrival.user_agent
    agent = parse_agent(user_agent)
    utm = utm_params(item.parts.query)
    received_at = ch_time(arrival.received_ms)
    at = clamp_time(item.client_ms, arrival.received_ms)
    return PixelEvent(
        event_id=event_id(arrival.received_ms),
        workspace_id=workspace_id,
        event=item.event,
        time=received_at if at == arrival.received_ms else ch_time(at),
        received_at=received_at,
        client_time=None if item.client_ms is None else ch_time(item.client_ms),
        url=item.url,
        host=item.host,
        path=item.parts.path or "/",
        referrer=item.referrer,
        referrer_host=url_host(item.referrer) if item.referrer else "",
        utm_source=utm.get("utm_source", ""),
        utm_medium=utm.get("utm_medium", ""),
        utm_campaign=utm.get("utm_campaign", ""),
        utm_term=utm.get("utm_term", ""),
        utm_content=utm.get("utm_content", ""),
        properties=item.properties,
        visitor_id=visitor_id(arrival.salt, workspace_id, arrival.address, user_agent),
        ip_prefix=ip_prefix(arrival.address),
        user_agent=user_agent,
        browser=agent.browser,
        browser_version=agent.version,
        os=agent.os,
        device=agent.device,
        is_bot=agent.is_bot,
        source=arrival.source,
    )
