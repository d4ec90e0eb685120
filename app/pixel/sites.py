"""Pixel stage "which site": a host → the workspace claim that serves it, from memory.

Whose a host is (README, Pixel tracking), from every claim on the host and its parent domains:
a) the deepest verified claim wins: it covers its host and every subdomain;
b) with none verified, unverified claims on the host, or on it without a leading "www.", serve
   only when one workspace holds them and no other workspace claims the host or a parent of it.
   Otherwise the host is contested and serves nobody until someone verifies it: an unverified
   claim never takes traffic that another workspace claims too.

A site's excluded paths are globs as Plausible's page exclusions write them: `*` matches within
one path segment, `**` across segments, the rest is literal (dots, `+`, `(`…). A `**` that is a
whole segment may also stand for none: `/admin/**` covers /admin, /admin/ and /admin/a/b, and
`/shop/**/cart` covers /shop/cart and /shop/eu/de/cart. A site's list becomes one alternation,
compiled when the Site is built and matched whole. Google's RE2 (google-re2) matches it, not `re`:
globs from a site's settings against paths from anyone's events must not backtrack (`re` takes
1.5 s to refuse "/" + "a" * 2000 for `/**a**a**b`; RE2 is linear in the path). Answers are
memoised per (list, path): a site's pages repeat, and `re2` costs 1.5-4 µs a call.

Requirements: no Postgres round trip per event (answers live pixel_config_cache_seconds, and
"unknown" is remembered too, so unknown hosts cost no query either); one query per miss;
concurrent misses for one host share it; a Postgres outage serves the last known answer rather
than failing every event; memory stays bounded whatever hosts clients make up.
"""

import asyncio
import enum
import functools
import re
import time
from dataclasses import dataclass, field

import asyncpg
import re2  # type: ignore[import-untyped]

from storage.postgres import domains

# Hosts are picked by clients (Origin, event URLs): bound what they can make us remember.
MAX_ENTRIES = 50_000
HOST_MAX = 253  # DNS: no claim can be on a longer name, so a longer one costs no query
# Longer wildcards first. A `**` that is a whole segment may also stand for no segment at all.
GLOB_TOKEN = re.compile(r"/\*\*/|/\*\*\Z|\*\*|\*")
GLOB_REGEX = {"/**/": "/(?:.*/)?", "/**": "(?:/.*)?", "**": ".*", "*": "[^/]*"}


def glob_regex(pattern: str) -> str:
    """One excluded-path pattern as an RE2 regex (unanchored): wildcards as above, the rest literal."""
    parts, at = [], 0
    for match in GLOB_TOKEN.finditer(pattern):
        parts += [re2.escape(pattern[at : match.start()]), GLOB_REGEX[match.group()]]
        at = match.end()
    parts.append(re2.escape(pattern[at:]))
    return "".join(parts)


@functools.lru_cache(maxsize=1024)  # sites share lists ("/admin/**"), and each reload rebuilds a Site
def compile_paths(patterns: tuple[str, ...]):  # -> re2._Regexp | None
    """The patterns as one alternation (matched whole); None for none: nothing is excluded."""
    if not patterns:
        return None
    return re2.compile("(?s)(?:" + "|".join(map(glob_regex, patterns)) + ")")


@functools.lru_cache(maxsize=4096)  # a site's pages repeat; bounded (paths are the client's, up to 2 KB)
def path_excluded(compiled, path: str) -> bool:
    try:
        return compiled.fullmatch(path) is not None
    except UnicodeEncodeError:  # a lone surrogate: RE2 reads UTF-8, which cannot hold one
        return compiled.fullmatch(path.encode("utf-8", "replace").decode()) is not None


class Unserved(enum.Enum):
    """Why no site serves a host."""

    UNKNOWN = "unknown"  # no workspace claims it
    CONTESTED = "contested"  # unverified claims of several workspaces meet on it


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
    session_timeout_minutes: int = 30
    honor_privacy_signals: bool = True
    excluded_paths: tuple[str, ...] = ()
    visitor_id_rotation: str = "daily"  # daily | weekly | monthly: how often the visitor id's salt changes
    excluded: object = field(init=False, repr=False, compare=False)  # compile_paths(excluded_paths)

    def __post_init__(self) -> None:
        object.__setattr__(self, "excluded", compile_paths(self.excluded_paths))

    def excludes(self, path: str) -> bool:
        """Whether a page's path (as its URL has it, "/" for none) matches one of the excluded paths."""
        return self.excluded is not None and path_excluded(self.excluded, path)

    def config(self) -> dict:
        """The spec's /pixel/config answer."""
        return {
            "enabled": self.enabled,
            "features": {"pageviews": self.pageviews, "events": self.events, "sessions": self.sessions},
            "sample_rate": self.sample_rate,
        }

    @classmethod
    def from_row(cls, row: dict) -> "Site":
        return cls(
            row["id"],
            row["workspace_id"],
            row["host"],
            row["enabled"],
            row["pageviews"],
            row["events"],
            row["sessions"],
            row["sample_rate"],
            row["session_timeout_minutes"],
            row["honor_privacy_signals"],
            tuple(row["excluded_paths"]),
            row["visitor_id_rotation"],
        )


def www_less(host: str) -> str:
    return host[4:] if host.startswith("www.") and len(host) > 4 else host


def _deepest(claims: list[dict]) -> dict:
    return max(claims, key=lambda claim: len(claim["host"]))


def resolve(host: str, claims: list[dict]) -> Site | Unserved:
    """The rule above, over every claim on host and its parents (storage's with_parents)."""
    verified = [claim for claim in claims if claim["verified_at"] is not None]
    if verified:
        owner = _deepest(verified)["workspace_id"]
        # The owner's own most specific claim carries the config (e.g. its shop.example.com
        # under its verified example.com).
        return Site.from_row(_deepest([claim for claim in claims if claim["workspace_id"] == owner]))
    near = [claim for claim in claims if claim["host"] in (host, www_less(host))]
    if not near:
        return Unserved.UNKNOWN
    if len({claim["workspace_id"] for claim in claims}) > 1:
        return Unserved.CONTESTED
    return Site.from_row(_deepest(near))


class SiteCache:
    def __init__(self, pool: asyncpg.Pool, ttl_seconds: float):
        self.pool = pool
        self.ttl = ttl_seconds
        self.entries: dict[str, tuple[float, Site | Unserved]] = {}
        self.loading: dict[str, asyncio.Future] = {}
        self.changes = 0  # forget() calls: a load that began before one must not store its answer

    def peek(self, host: str) -> Site | None:
        """A fresh cached site without any I/O (None also when not cached)."""
        entry = self.entries.get(host)
        if entry is None or entry[0] <= time.monotonic() or not isinstance(entry[1], Site):
            return None
        return entry[1]

    def fresh(self, host: str) -> Site | Unserved | None:
        """find()'s answer when it is cached and fresh, else None (ask find()): the hot path's
        case, answered without a coroutine."""
        entry = self.entries.get(host)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    async def find(self, host: str) -> Site | Unserved:
        entry = self.entries.get(host)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        if not host or len(host) > HOST_MAX:
            return Unserved.UNKNOWN
        pending = self.loading.get(host)
        if pending is None:
            pending = asyncio.ensure_future(self._load(host, entry))
            self.loading[host] = pending
            pending.add_done_callback(lambda _f: self.loading.pop(host, None))
        return await asyncio.shield(pending)

    async def _load(self, host: str, stale: tuple[float, Site | Unserved] | None) -> Site | Unserved:
        changes = self.changes
        try:
            claims = await domains.find_claims(self.pool, domains.with_parents(host))
        except Exception:
            if stale is not None:  # Postgres away: the last answer beats failing every event
                return stale[1]
            raise
        answer = resolve(host, claims)
        if changes == self.changes:
            self._store(host, answer)
        return answer

    def _store(self, host: str, answer: Site | Unserved) -> None:
        now = time.monotonic()
        if len(self.entries) >= MAX_ENTRIES:
            self.entries = {h: e for h, e in self.entries.items() if e[0] > now}
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
        self.entries[host] = (now + self.ttl, answer)

    def forget(self, host: str) -> None:
        """After a change to a claim on host through this process: it can change the answer for
        host and every subdomain. Other processes see it within the TTL."""
        self.changes += 1
        suffix = "." + host
        for name in [name for name in self.entries if name == host or name.endswith(suffix)]:
            del self.entries[name]
