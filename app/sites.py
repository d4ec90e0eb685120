"""Pixel stage "which site": a host → its workspace and pixel config, from memory.

Requirements: no Postgres round trip per event (entries live pixel_config_cache_seconds, and
"not registered" is remembered too, so unknown hosts cost no query either); concurrent misses
for one host share one query; a Postgres outage serves the last known answer rather than
failing every event; memory stays bounded whatever hosts clients make up.
"""

import asyncio
import time
from dataclasses import dataclass

from storage.postgres import domains

# Hosts are picked by clients (Origin, event URLs): bound what they can make us remember.
MAX_ENTRIES = 50_000
MISSING = object()  # fresh(): nothing cached, ask find()


@dataclass(frozen=True, slots=True)
class Site:
    domain_id: int
    workspace_id: int
    host: str
    enabled: bool
    pageviews: bool
    events: bool
    sessions: bool
    sample_rate: float

    def config(self) -> dict:
        """The spec's /pixel/config answer."""
        return {
            "enabled": self.enabled,
            "features": {"pageviews": self.pageviews, "events": self.events, "sessions": self.sessions},
            "sample_rate": self.sample_rate,
        }

    @classmethod
    def from_row(cls, row: dict) -> "Site":
        return cls(row["id"], row["workspace_id"], row["host"], row["enabled"], row["pageviews"],
                   row["events"], row["sessions"], row["sample_rate"])


def candidates(host: str) -> tuple[str, ...]:
    """A host is looked up as given, then without a leading "www."."""
    return (host, host[4:]) if host.startswith("www.") and len(host) > 4 else (host,)


class SiteCache:
    def __init__(self, pool, ttl_seconds: float):
        self.pool = pool
        self.ttl = ttl_seconds
        self.entries: dict[str, tuple[float, Site | None]] = {}
        self.loading: dict[str, asyncio.Future] = {}

    def peek(self, host: str) -> Site | None:
        """A fresh cached answer without any I/O (None also when not cached)."""
        entry = self.entries.get(host)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def fresh(self, host: str):
        """find()'s answer when every name it would look up is cached and fresh, else MISSING.

        The hot path's case, answered without a coroutine."""
        now = time.monotonic()
        for name in candidates(host):
            entry = self.entries.get(name)
            if entry is None or entry[0] <= now:
                return MISSING
            if entry[1] is not None:
                return entry[1]
        return None

    async def find(self, host: str) -> Site | None:
        """The site registered for host (or its www-less form), None when none is."""
        for name in candidates(host):
            site = await self._lookup(name)
            if site is not None:
                return site
        return None

    async def _lookup(self, host: str) -> Site | None:
        entry = self.entries.get(host)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        pending = self.loading.get(host)
        if pending is None:
            pending = asyncio.ensure_future(self._load(host, entry))
            self.loading[host] = pending
            pending.add_done_callback(lambda _f: self.loading.pop(host, None))
        return await asyncio.shield(pending)

    async def _load(self, host: str, stale) -> Site | None:
        try:
            row = await domains.find_by_host(self.pool, host)
        except Exception:
            if stale is not None:  # Postgres away: the last answer beats failing every event
                return stale[1]
            raise
        site = None if row is None else Site.from_row(row)
        self._store(host, site)
        return site

    def _store(self, host: str, site: Site | None) -> None:
        now = time.monotonic()
        if len(self.entries) >= MAX_ENTRIES:
            self.entries = {h: e for h, e in self.entries.items() if e[0] > now}
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
        self.entries[host] = (now + self.ttl, site)

    def forget(self, host: str) -> None:
        """After a change through this process; other processes see it within the TTL."""
        self.entries.pop(host, None)
