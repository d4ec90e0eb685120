"""Pixel stage "intake": the pixel's state for the process's lifetime, and what becomes of each event.

admit the client (storage/redis/rate_limit.py, or the local limiter while Redis is away) and place
it (app/pixel/geo.py) → judge each event: validate (app/pixel/validation.py), find its site
(app/pixel/sites.py, in memory), drop what the site does not want (features, privacy signals,
excluded paths), enrich (app/pixel/enrichment.py: device, source, channel, visitor id under the
site's salt, the session hint), drop bots and sampled-out events → hand the accepted ones to the
sink in one call (ingest/handoff/sink.py) → count the rest by reason (ingest/handoff/drops.py).
The routes that parse requests and shape answers are app/pixel/track.py; apart from them this
holds no route, so app/http/routing.py's Services can name its type.
"""

import enum
import time
from dataclasses import dataclass
from typing import ClassVar

import asyncpg
import redis.asyncio as redis
from blacksheep import Request
from redis.exceptions import RedisError

from app.access.rate_limits import LimitMode, LocalLimiter, RedisHealth
from app.http.client_ip import from_trusted_proxy, ip_digest, request_client_address
from app.http.errors import ApiError, DomainNotVerified, UnknownDomain, ValidationFailed
from app.pixel.enrichment import Arrival, Visitor, enrich, needs_alias, previous_period, salt_period, sample_point
from app.pixel.geo import Geo, cdn_location
from app.pixel.sites import Site, SiteCache, Unserved
from app.pixel.validation import USER_AGENT_MAX, TrackedInput, check_event, page_host
from ingest.events import DropReason, PixelEvent, Topics, now_ms, workspace_key
from ingest.handoff.drops import DropCounter
from ingest.handoff.sink import Sink
from ingest.handoff.spool import SpoolFull
from storage.config import Config
from storage.redis.rate_limit import Decision, RateLimiter, limiter_key
from storage.redis.salts import Salts
from storage.telemetry.metrics import ApiMetrics

DAY_MS = 86_400_000


class Verdict(enum.StrEnum):
    """What became of one event: the `status` of each result in a batch's answer."""

    ACCEPTED = "accepted"  # durable, answered 2xx
    DROPPED = "dropped"  # well formed, not kept (disabled, consent, excluded, bot, sampled out): 200 with the reason
    REJECTED = "rejected"  # not usable (invalid 422, unknown domain 403): its error envelope


# What became of one event; not frozen: a frozen __init__ costs ~1.5 µs more per event.
@dataclass(slots=True)
class Accepted:
    workspace_id: int
    event: PixelEvent
    session: bytes  # ingest/events.py session_prefix
    status: ClassVar[Verdict] = Verdict.ACCEPTED

    def result(self, index: int) -> dict:
        return {"index": index, "status": self.status, "event_id": self.event.event_id}


@dataclass(slots=True)
class Dropped:
    reason: DropReason
    workspace_id: int
    status: ClassVar[Verdict] = Verdict.DROPPED

    def result(self, index: int) -> dict:
        return {"index": index, "status": self.status, "reason": self.reason}


@dataclass(slots=True)
class Rejected:
    reason: DropReason
    workspace_id: int
    error: ApiError
    status: ClassVar[Verdict] = Verdict.REJECTED

    def result(self, index: int) -> dict:
        return {"index": index, "status": self.status, **self.error.body()}


Outcome = Accepted | Dropped | Rejected


class Pixel:
    """The pixel's state for the process's lifetime: site cache, salts, limiters, drop counts."""

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool,
        client: redis.Redis,
        sink: Sink,
        health: RedisHealth | None = None,
        metrics: ApiMetrics | None = None,
    ):
        """`health`: the process's view of Redis, shared with the API keys' limiter; `metrics` None:
        nothing is observed (SLUICE_METRICS=off, tests)."""
        self.settings = api = config.api
        self.sink = sink
        self.topics = Topics.with_prefix(config.shared.kafka_topic_prefix)
        self.sites = SiteCache(pool, api.pixel_config_cache_seconds)
        self.salts = Salts(client)
        self.geo = Geo(api.geoip_db)
        self.geo_headers = api.geo_headers
        self.limiter = RateLimiter(client) if api.rate_limits else None
        self.local = LocalLimiter(api.workers)
        self.health = health or RedisHealth()
        self.trusted = api.trusted_proxies
        self.drops = DropCounter(sink, self.topics.dropped, metrics=metrics)
        self.metrics = metrics
        self._day = (-1, "")
        self.accepted = 0  # events made durable and answered 2xx (sluice_pixel_events_accepted_total by source)

    def start(self) -> None:
        self.drops.start()

    async def stop(self) -> None:
        await self.drops.stop()
        self.geo.close()

    def cached_visitor(self, site: Site, received_ms: int) -> Visitor | None:
        """The salts of the site's visitor-id period (and of the one before, near a change) and its
        session timeout, when no Redis round trip is due (the hot path's case); else None: ask visitor()."""
        rotation = site.visitor_id_rotation
        period = salt_period(received_ms, rotation)
        salt = self.salts.cached(period.name)
        if salt is None:
            return None
        timeout = site.session_timeout_minutes * 60 if site.sessions else 0
        if not needs_alias(received_ms, period, timeout):
            return salt, None, timeout
        previous = self.salts.cached(previous_period(period, rotation).name)
        return None if previous is None else (salt, previous, timeout)

    async def visitor(self, site: Site, received_ms: int) -> Visitor:
        """cached_visitor's answer, asking Redis for the salts it lacks (once per period and process)."""
        rotation = site.visitor_id_rotation
        current = salt_period(received_ms, rotation)
        await self.salts.for_period(current.name, current.salt_expires_at)
        if needs_alias(received_ms, current, site.session_timeout_minutes * 60 if site.sessions else 0):
            before = previous_period(current, rotation)  # its salt is still kept: it ended under a day ago
            await self.salts.for_period(before.name, before.salt_expires_at)
        visitor = self.cached_visitor(site, received_ms)
        assert visitor is not None  # both salts are cached now (shared, or local for RETRY_SECONDS)
        return visitor

    async def arrival(self, request: Request, source: str) -> Arrival:
        received = now_ms()
        header = request.get_first_header(b"user-agent") or b""
        user_agent = header.decode("latin-1")[:USER_AGENT_MAX]
        address = request_client_address(request, self.trusted)
        # A CDN's own lookup, when a trusted proxy passes it on, beats ours of its address.
        location = None
        if self.geo_headers and from_trusted_proxy(request.client_ip, self.trusted):
            location = cdn_location(request.get_first_header, self.geo_headers)
        day = self._day_text(received)
        salt = self.salts.cached(day)  # a Redis round trip once a day, not a coroutine per request
        return Arrival(
            received,
            address,
            user_agent,
            source,
            salt if salt is not None else await self.salts.for_day(day),
            opted_out(request),
            location or self.geo.locate(address),
        )

    def _day_text(self, received_ms: int) -> str:
        day = received_ms // DAY_MS
        if self._day[0] != day:
            self._day = (day, time.strftime("%Y-%m-%d", time.gmtime(day * 86_400)))
        return self._day[1]

    async def admit(self, arrival: Arrival) -> tuple[Decision, LimitMode] | None:
        """The per-IP decision and who made it (None: rate limits are off); the key is a keyed
        hash of the address, never the address."""
        if self.limiter is None:
            return None
        key = limiter_key("pixel", ip_digest(arrival.address, arrival.salt))
        limit = self.settings.pixel_rate_limit
        if self.health.usable():
            try:
                decision = await self.limiter.allow(key, limit, limit)
                self.health.succeeded()
                return decision, LimitMode.SHARED
            except (RedisError, OSError) as exc:
                self.health.failed(exc)
        self.health.fallback_requests += 1
        return self.local.allow(key, limit, limit), LimitMode.LOCAL

    async def judge(self, data: object, arrival: Arrival) -> Outcome:
        checked = check_event(data)
        if not isinstance(checked, TrackedInput):
            return Rejected(DropReason.INVALID, self.known_workspace(data), ValidationFailed(checked))
        site = self.sites.fresh(checked.host)
        if site is None:
            site = await self.sites.find(checked.host)
        if isinstance(site, Unserved):
            error = DomainNotVerified(checked.host) if site is Unserved.CONTESTED else UnknownDomain(checked.host)
            return Rejected(DropReason.UNKNOWN_DOMAIN, 0, error)
        if not site.enabled or not wanted(site, checked.event):
            return Dropped(DropReason.DISABLED, site.workspace_id)
        if arrival.opted_out and site.honor_privacy_signals:
            return Dropped(DropReason.CONSENT, site.workspace_id)
        if site.excluded is not None and site.excludes(checked.parts.path or "/"):
            return Dropped(DropReason.EXCLUDED, site.workspace_id)
        visitor = self.cached_visitor(site, arrival.received_ms) or await self.visitor(site, arrival.received_ms)
        event, session = enrich(checked, site.workspace_id, arrival, visitor)
        if event.is_bot and not self.settings.pixel_keep_bots:
            return Dropped(DropReason.BOT, site.workspace_id)
        point = checked.sample_key if checked.sample_key is not None else sample_point(event.visitor_id)
        if point >= site.sample_rate:
            return Dropped(DropReason.SAMPLED_OUT, site.workspace_id)
        return Accepted(site.workspace_id, event, session)

    def known_workspace(self, data: object) -> int:
        """The workspace an unusable event was meant for, if its URL names a cached site."""
        host = page_host(data)
        site = self.sites.peek(host) if host else None
        return site.workspace_id if site is not None else 0

    async def deliver(self, outcomes: list[Outcome], source: str) -> None:
        """Accepted events to the sink (Kafka, or the spool) in one call; raises SpoolFull."""
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        if not accepted:
            return
        events = [o.event for o in accepted]
        records = [(workspace_key(o.workspace_id), o.event.encode(o.session)) for o in accepted]
        try:
            await self.sink.send_many(self.topics.pixel, records)
        except SpoolFull:
            for event in events:
                self.drops.add(event.workspace_id, DropReason.SPOOL_FULL, source)
            raise
        self.accepted += len(events)
        if self.metrics is not None:
            self.metrics.pixel_accepted(source, len(events))

    def count(self, outcomes: list[Outcome], source: str) -> None:
        for outcome in outcomes:
            if not isinstance(outcome, Accepted):
                self.drops.add(outcome.workspace_id, outcome.reason, source)


def opted_out(request: Request) -> bool:
    """Global Privacy Control (Sec-GPC: 1) or Do-Not-Track (DNT: 1) on the request."""
    return request.get_first_header(b"sec-gpc") == b"1" or request.get_first_header(b"dnt") == b"1"


def wanted(site: Site, event: str) -> bool:
    """The site's features: pageviews and their engagement need pageviews on, any other event needs events on."""
    return site.pageviews if event == "pageview" or event == "engagement" else site.events
