"""Configuration: every environment variable Sluice reads, declared once and read once at start.

Lowest layer, so the API (app/), the workers (ingest/) and storage share one typed tree: each entry
point calls `load(os.environ)` (or `load_or_exit`) once and passes the sections down; nothing else
reads the environment. The local stack (storage/local_stack) keeps its own provisioning variables.

Modelled on Starlette's `Config(key, cast=…, default=…)`: a variable is a dataclass field with its
name, caster, default and meaning; one reader applies every caster and fails in one format,
"SLUICE_X has value 'abc'; expected an integer from 1 to 64". Unset or empty means the default.
`python -m storage.config --markdown` prints README's configuration tables from these fields.
"""

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
# The spec caps an MCP tool call at 300 s (a registry entry's own timeout_seconds too).
MCP_MAX_TIMEOUT_SECONDS = 300.0


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A variable holds a value its caster refuses; the message is the one line to show."""


class Cast(Protocol):
    """Raw text → typed value, ValueError otherwise; `allowed` is said in errors and in README."""

    @property
    def allowed(self) -> str: ...

    def __call__(self, raw: str) -> Any: ...


# -- casters ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Integer:
    low: int
    high: int | None = None

    @property
    def allowed(self) -> str:
        return f"an integer from {self.low} to {self.high}" if self.high is not None else f"an integer ≥ {self.low}"

    def __call__(self, raw: str) -> int:
        value = int(raw)
        if value < self.low or (self.high is not None and value > self.high):
            raise ValueError(raw)
        return value


@dataclass(frozen=True)
class Number:
    low: float
    high: float | None = None
    low_included: bool = True

    @property
    def allowed(self) -> str:
        low = f"{'≥' if self.low_included else '>'} {self.low:g}"
        return f"a number {low}" + (f" and ≤ {self.high:g}" if self.high is not None else "")

    def __call__(self, raw: str) -> float:
        value = float(raw)
        below = value < self.low if self.low_included else value <= self.low
        if not math.isfinite(value) or below or (self.high is not None and value > self.high):
            raise ValueError(raw)
        return value


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _truth(raw: str) -> bool | None:
    lowered = raw.lower()
    return True if lowered in TRUE else False if lowered in FALSE else None


@dataclass(frozen=True)
class Flag:
    allowed: str = "on or off (also 1/0, true/false, yes/no)"

    def __call__(self, raw: str) -> bool:
        value = _truth(raw)
        if value is None:
            raise ValueError(raw)
        return value


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(self.options)

    def __call__(self, raw: str) -> str:
        if raw.lower() not in self.options:
            raise ValueError(raw)
        return raw.lower()


@dataclass(frozen=True)
class Choices:
    options: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return "comma-separated, each one of " + ", ".join(self.options)

    def __call__(self, raw: str) -> tuple[str, ...]:
        names = tuple(item.lower() for item in _items(raw))
        if any(name not in self.options for name in names):
            raise ValueError(raw)
        return names


@dataclass(frozen=True)
class Text:
    allowed: str = "any text"
    pattern: str = ".+"

    def __call__(self, raw: str) -> str:
        if not re.fullmatch(self.pattern, raw):
            raise ValueError(raw)
        return raw


@dataclass(frozen=True)
class Url:
    schemes: tuple[str, ...]
    base: bool = False  # a base other URLs are joined to: no trailing slash

    @property
    def allowed(self) -> str:
        *first, last = [f"{s}://" for s in self.schemes]
        return f"a URL ({', '.join(first)} or {last})" if first else f"a URL ({last})"

    def __call__(self, raw: str) -> str:
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme.lower() not in self.schemes or not rest:
            raise ValueError(raw)
        return raw.rstrip("/") if self.base else raw


@dataclass(frozen=True)
class FsPath:
    allowed: str = "a path"

    def __call__(self, raw: str) -> Path:
        return Path(raw).resolve()


@dataclass(frozen=True)
class Networks:
    allowed: str = "comma-separated IP addresses or networks (CIDR)"

    def __call__(self, raw: str) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(part, strict=False) for part in _items(raw))


@dataclass(frozen=True)
class Nameservers:
    """ "10.0.0.2, 127.0.0.1:5353, [::1]:53" → ((address, port), …); port 53 unless given."""

    allowed: str = "comma-separated ip, ip:port or [ipv6]:port"

    def __call__(self, raw: str) -> tuple[tuple[str, int], ...]:
        return tuple(self._one(part) for part in _items(raw))

    @staticmethod
    def _one(part: str) -> tuple[str, int]:
        address, port = part, "53"
        if part.startswith("["):
            address, _, port = part[1:].partition("]")
            port = port[1:] if port.startswith(":") else port or "53"
        elif part.count(":") == 1:
            address, port = part.split(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(part)
        return str(ipaddress.ip_address(address)), int(port)


@dataclass(frozen=True)
class CaBundle:
    """True: the system's CAs; False: no verification; else the path of a PEM file to trust."""

    allowed: str = "on, off, or the path of a PEM file"

    def __call__(self, raw: str) -> str | bool:
        value = _truth(raw)
        if value is not None:
            return value
        if not Path(raw).is_file():
            raise ValueError(raw)
        return raw


@dataclass(frozen=True)
class Credentials:
    """`name:sha256hex,…`: users and the SHA-256 of each one's password (never the password)."""

    allowed: str = "comma-separated name:sha256hex (64 hex digits)"

    def __call__(self, raw: str) -> tuple[tuple[str, str], ...]:
        pairs = [item.partition(":") for item in _items(raw)]
        valid = (re.fullmatch(r"[A-Za-z0-9_.-]+", n) and re.fullmatch(r"[0-9a-fA-F]{64}", h) for n, _, h in pairs)
        if not pairs or not all(valid):
            raise ValueError(raw)
        return tuple((name, digest.lower()) for name, _, digest in pairs)


def _items(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


@dataclass(frozen=True)
class Variable:
    name: str
    cast: Cast
    meaning: str
    shown: str | None  # the default as README shows it, where the value depends on the machine


def variable(name: str, cast: Cast, default: Any, meaning: str, shown: str | None = None) -> Any:
    """A field of a section: its environment variable, caster, default and one-line meaning."""
    return field(default=default, metadata={"variable": Variable(name, cast, meaning, shown)})


# -- the tree: one frozen dataclass per section, each field one variable ---------------------------

PORT = Integer(1, 65535)
ONE_UP, ZERO_UP = Integer(1), Integer(0)
# A rate per minute the limiters can represent: one request per microsecond at most.
PER_MINUTE = Integer(1, 60_000_000)
POSITIVE = Number(0, low_included=False)
# Where a process serves HTTP of its own: `host:port` or `[v6]:port` (port 0: any free one), or `off`.
LISTEN = Text("host:port (port 0: any free one) or off", r"off|(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):\d{1,5}")


def listen_address(value: str) -> tuple[str, int] | None:
    """A LISTEN value as (host, port); None for `off`."""
    if value == "off":
        return None
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True)
class SharedConfig:
    """Backing services and Kafka topics, read by every process"""

    database_url: str = variable(
        "DATABASE_URL",
        Url(("postgresql", "postgres")),
        "postgresql://sluice@127.0.0.1:5432/sluice",
        "Postgres. `make run`/`make test` provision one under `.services/` and set this, unless it is set already.",
    )
    redis_url: str = variable(
        "REDIS_URL", Url(("redis", "rediss", "unix")), "redis://127.0.0.1:6379/0", "Redis; same rule."
    )
    kafka_bootstrap_servers: str = variable(
        "KAFKA_BOOTSTRAP_SERVERS",
        Text("comma-separated host:port", r"[^\s,]+(\s*,\s*[^\s,]+)*"),
        "127.0.0.1:9092",
        "Kafka brokers; same rule.",
    )
    clickhouse_url: str = variable(
        "CLICKHOUSE_URL",
        Text("a URL (chdb:///dir, http:// or https://)", r"[A-Za-z][A-Za-z0-9+.-]*://.+"),
        f"chdb://{ROOT / '.services' / 'clickhouse'}",
        "`chdb:///dir` (embedded) or `http://user:pass@host:8123/db` (server).",
        "`chdb:///<repo>/.services/clickhouse`",
    )
    log_level: str = variable(
        "SLUICE_LOG_LEVEL",
        Choice(("debug", "info", "warning", "error", "critical")),
        "info",
        "Log level of every process (and of granian).",
    )
    log_format: str = variable(
        "SLUICE_LOG_FORMAT",
        Choice(("auto", "text", "json")),
        "auto",
        "`json`: one JSON object per line (`ts`, `level`, `logger`, `message`, `process`, `request_id`, and each "
        "line's own fields); `text`: readable lines; `auto`: text when stderr is a terminal, JSON otherwise.",
    )
    kafka_topic_prefix: str = variable(
        "SLUICE_KAFKA_TOPIC_PREFIX",
        Text("letters, digits, '.', '_' and '-'", r"[A-Za-z0-9._-]{1,200}"),
        "sluice.",
        "Topic names are this prefix + `pixel`, `usage`, `dropped`, `dead-letter` (API and worker must agree).",
    )
    kafka_partitions: int = variable(
        "SLUICE_KAFKA_PARTITIONS",
        ONE_UP,
        6,
        "Partitions of each topic when Sluice creates it; bounds the consumer group's parallelism.",
    )


@dataclass(frozen=True)
class ApiConfig:
    """The API process (`python -m app serve`), with the pixel and the hand-off to Kafka"""

    host: str = variable("SLUICE_HOST", Text(), "127.0.0.1", "Address the API listens on.")
    port: int = variable("SLUICE_PORT", PORT, 8000, "Port the API listens on.")
    workers: int = variable("SLUICE_WORKERS", ONE_UP, 1, "granian worker processes.")
    metrics: bool = variable(
        "SLUICE_METRICS",
        Flag(),
        True,
        "`off`: the API observes nothing for its metrics (no cost on the hot path) and `/metrics` answers 404.",
    )
    public_url: str = variable(
        "SLUICE_PUBLIC_URL",
        Url(("http", "https"), base=True),
        "",
        "Base of absolute URLs in `links`, e.g. `https://api.example.com`.",
        "empty (use the request's scheme and Host)",
    )
    api_url: str = variable(
        "SLUICE_API_URL",
        Url(("http", "https"), base=True),
        "",
        "Where `python -m app status` reaches the API (its `/readyz` and `/metrics`).",
        "empty (`http://SLUICE_HOST:SLUICE_PORT`)",
    )
    max_body_bytes: int = variable(
        "SLUICE_MAX_BODY_BYTES", ONE_UP, 1_048_576, "Largest request body accepted; larger → 413."
    )
    body_timeout_seconds: int = variable(
        "SLUICE_BODY_TIMEOUT_SECONDS",
        ONE_UP,
        10,
        "Time a client has, from the first read of its body, to send all of it; then 408 `request_timeout` and the "
        "connection is closed.",
    )
    # granian's HTTP/1 header read timeout accepts at most 60 s.
    header_timeout_seconds: int = variable(
        "SLUICE_HEADER_TIMEOUT_SECONDS",
        Integer(1, 60),
        30,
        "Time a client has to send a request's headers (granian's HTTP/1 header read timeout), which is also how "
        "long an idle keep-alive connection stays open: keep a load balancer's idle timeout below it.",
    )
    last_used_flush_seconds: int = variable(
        "SLUICE_LAST_USED_FLUSH_SECONDS",
        ONE_UP,
        5,
        "How often `last_used_at` of API keys is written (one batched UPDATE).",
    )
    pg_pool_size: int = variable("SLUICE_PG_POOL_SIZE", ONE_UP, 10, "asyncpg pool size per worker process.")
    rate_limits: bool = variable("SLUICE_RATE_LIMITS", Flag(), True, "`off` disables per-key rate limiting.")
    upgrade_url: str = variable(
        "SLUICE_UPGRADE_URL", Text(), "https://sluice.dev/upgrade", "`upgrade_url` in entitlement refusals."
    )
    entitlements_cache_seconds: int = variable(
        "SLUICE_ENTITLEMENTS_CACHE_SECONDS",
        ZERO_UP,
        30,
        "How long a process keeps a workspace's tier and limit overrides; changes apply within this time.",
    )
    workspace_cache_seconds: int = variable(
        "SLUICE_WORKSPACE_CACHE_SECONDS",
        ZERO_UP,
        30,
        "How long a process may keep a workspace row in memory. Every update or delete is announced by Postgres "
        "(`LISTEN sluice_workspaces`) and drops it at once; this only bounds a lost announcement. `0`: read Postgres "
        "every time.",
    )
    idempotency_ttl_seconds: int = variable(
        "SLUICE_IDEMPOTENCY_TTL_SECONDS",
        ONE_UP,
        86_400,  # the spec: repeats within 24 hours are replayed
        "How long a finished request's answer is replayed for its `Idempotency-Key`.",
    )
    kafka_linger_ms: int = variable(
        "SLUICE_KAFKA_LINGER_MS",
        ZERO_UP,
        5,
        "Linger of aiokafka's own batches (spool replays, drop counts). Events from requests do not linger: they "
        "join the partition's open batch, sent as soon as the previous one is acknowledged.",
    )
    kafka_batch_bytes: int = variable(
        "SLUICE_KAFKA_BATCH_BYTES", ONE_UP, 262_144, "Producer batch size per partition (uncompressed)."
    )
    kafka_ack_deadline_ms: int = variable(
        "SLUICE_KAFKA_ACK_DEADLINE_MS",
        ZERO_UP,
        1500,
        "How long a request waits for Kafka's acknowledgement before its events go to the spool.",
    )
    spool_dir: Path = variable(
        "SLUICE_SPOOL_DIR",
        FsPath(),
        ROOT / ".services" / "spool",
        "On-disk spool (fsync'd) for events Kafka could not take yet; replayed in order when it is back.",
        "`<repo>/.services/spool`",
    )
    spool_max_bytes: int = variable(
        "SLUICE_SPOOL_MAX_BYTES",
        ONE_UP,
        1 << 30,
        "Spool size limit per API process; when full, ingest endpoints answer 503 with `Retry-After`.",
    )
    trusted_proxies: tuple[Network, ...] = variable(
        "SLUICE_TRUSTED_PROXIES",
        Networks(),
        (),
        "Addresses/networks whose `X-Forwarded-For` is believed, e.g. `10.0.0.0/8,127.0.0.1`.",
        "empty (trust none)",
    )
    auth_failures_per_minute: int = variable(
        "SLUICE_AUTH_FAILURES_PER_MINUTE",
        Integer(0, 60_000_000),
        60,
        "Requests without a valid API key (none, malformed, unknown, expired or revoked; 401s and such 404/405s) "
        "per client address per minute before it gets 429; `0`: no limit.",
    )
    pixel_rate_limit: int = variable(
        "SLUICE_PIXEL_RATE_LIMIT",
        PER_MINUTE,
        300,  # the spec's limit
        "`pixel/track` and `pixel/config` requests per minute per client IP.",
    )
    pixel_max_batch: int = variable("SLUICE_PIXEL_MAX_BATCH", ONE_UP, 100, "Most events in one batch request.")
    pixel_path: str = variable(
        "SLUICE_PIXEL_PATH",
        # Not under /api: the aliases must not shadow (or be mistaken for) an API route.
        Text(
            "a path such as `/x7`: `/`-separated segments of letters, digits, `_` and `-`, not under `/api`, "
            "no trailing slash",
            r"(?!/api(?:/|$))(?:/[A-Za-z0-9_-]+)+",
        ),
        "",
        "A neutral prefix `P` under which the API also serves the script (`P/s.js`), track (`P/e`) and config "
        "(`P/c`), names ad blockers do not know. Proxy it from the site's own origin and load the script with "
        '`data-endpoint="P"` (forward `X-Forwarded-For` and list the proxy in `SLUICE_TRUSTED_PROXIES`).',
        "empty (off)",
    )
    pixel_config_cache_seconds: int = variable(
        "SLUICE_PIXEL_CONFIG_CACHE_SECONDS",
        ZERO_UP,
        30,
        "How long a process keeps a domain's pixel configuration (and unknown domains).",
    )
    pixel_keep_bots: bool = variable(
        "SLUICE_PIXEL_KEEP_BOTS",
        Flag(),
        False,
        "`on` stores events from bots (flagged `is_bot`) instead of dropping them as `bot`.",
    )
    geoip_db: Path | None = variable(
        "SLUICE_GEOIP_DB",
        FsPath("a MaxMind-format .mmdb file (GeoLite2-City, GeoLite2-Country, DB-IP City Lite, ...)"),
        None,
        "A MaxMind-format `.mmdb` database for `country`, `region` and `city` of pixel events; "
        "unset: the country-only database shipped with Sluice's dependencies.",
        "unset (built-in country database)",
    )
    geo_headers: tuple[str, ...] = variable(
        "SLUICE_GEO_HEADERS",
        Choices(("cloudflare", "cloudfront", "vercel", "akamai")),
        (),
        "CDNs whose visitor-location headers (`CF-IPCountry`, `CloudFront-Viewer-Country`, `X-Vercel-IP-Country`, "
        "`X-Akamai-Edgescape`, with region and city) are believed, and only on requests from "
        "`SLUICE_TRUSTED_PROXIES`; name only the CDN in front of you (a CDN passes on the others' headers "
        "as a client sent them).",
        "empty (the address is looked up)",
    )
    dns_nameservers: tuple[tuple[str, int], ...] = variable(
        "SLUICE_DNS_NAMESERVERS",
        Nameservers(),
        (),
        "Nameservers domain verification asks (TXT records, and the site's address for its file and page fetches), "
        "e.g. `10.0.0.2,[::1]:5353`.",
        "empty (the system's resolver)",
    )
    # A dashboard's queries over rollups take tens of milliseconds: 20 s a minute is hundreds of them,
    # and one workspace's scans of raw events cannot hold ClickHouse for more than a third of it.
    stats_budget_ms: int = variable(
        "SLUICE_STATS_BUDGET_MS",
        ONE_UP,
        20_000,
        "Milliseconds of ClickHouse time a workspace's Stats API queries (and MCP analytics tools) may spend per "
        "minute; past it they answer 429 with `Retry-After` until the minute turns.",
    )
    stats_max_execution_seconds: float = variable(
        "SLUICE_STATS_MAX_EXECUTION_SECONDS",
        POSITIVE,
        10.0,
        "ClickHouse's `max_execution_time` for each Stats API query; one that runs longer answers 504.",
    )


@dataclass(frozen=True)
class WorkerConfig:
    """The ingest worker (`python -m ingest`)"""

    consumer_group: str = variable(
        "SLUICE_CONSUMER_GROUP", Text(), "sluice-ingest", "Kafka consumer group of the ingest workers."
    )
    # 600k-row drains (bench/consumer.py's clock): 197k rows/s at 100k, 187k at 50k, 192k at 200k.
    batch_rows: int = variable(
        "SLUICE_CONSUMER_BATCH_ROWS", ONE_UP, 100_000, "The worker inserts a batch when it holds this many rows…"
    )
    batch_ms: int = variable(
        "SLUICE_CONSUMER_BATCH_MS", ONE_UP, 1000, "…or when its oldest row waited this long, whichever comes first."
    )
    events_ttl_days: int = variable(
        "SLUICE_EVENTS_TTL_DAYS", ONE_UP, 400, "Raw events older than this are deleted by ClickHouse (TTL)."
    )
    fault_kill_after_batches: int = variable(
        "SLUICE_FAULT_KILL_AFTER_BATCHES",
        ZERO_UP,
        0,
        "Fault injection for tests, never set in production: after this many batches are inserted, "
        "the worker SIGKILLs itself before committing their offsets (0: never).",
    )
    clickhouse_http: str = variable(
        "SLUICE_CLICKHOUSE_HTTP",
        LISTEN,
        "127.0.0.1:8123",
        "With chdb://, the worker serves ClickHouse's HTTP interface (read-only) here for every reader and "
        "any ClickHouse client; `off` serves none (then only the worker can read the directory).",
    )
    clickhouse_http_users: tuple[tuple[str, str], ...] = variable(
        "SLUICE_CLICKHOUSE_HTTP_USERS",
        Credentials(),
        (),
        "Analysts of that interface, e.g. `ana:<sha256 of her password>`. None: any user, from this machine only.",
        "none",
    )
    clickhouse_http_readers: int = variable(
        "SLUICE_CLICKHOUSE_HTTP_READERS", Integer(1, 64), 2, "Queries that interface runs at once (more wait briefly)."
    )
    clickhouse_http_max_execution_seconds: int = variable(
        "SLUICE_CLICKHOUSE_HTTP_MAX_EXECUTION_SECONDS", ONE_UP, 60, "A query there stops after this long."
    )
    clickhouse_http_max_result_bytes: int = variable(
        "SLUICE_CLICKHOUSE_HTTP_MAX_RESULT_BYTES", ONE_UP, 1_000_000_000, "…or when its result passes this size…"
    )
    clickhouse_http_max_memory_bytes: int = variable(
        "SLUICE_CLICKHOUSE_HTTP_MAX_MEMORY_BYTES", ONE_UP, 4_000_000_000, "…or when it needs more memory than this."
    )
    metrics: str = variable(
        "SLUICE_WORKER_METRICS",
        LISTEN,
        "127.0.0.1:9101",
        "The worker's Prometheus `/metrics` (lag, inserts, dead letters, ClickHouse HTTP queries); `off` serves none. "
        "Each worker on a host needs a port of its own.",
    )


@dataclass(frozen=True)
class WebhooksConfig:
    """Webhook deliveries (`python -m ingest.webhooks.dispatcher`; the API's test sends use them too)"""

    # The spec's limit; a receiver should answer at once and do its work afterwards.
    timeout_seconds: float = variable(
        "SLUICE_WEBHOOK_TIMEOUT_SECONDS", POSITIVE, 30.0, "Whole-exchange timeout of one webhook attempt."
    )
    # Each send is mostly waiting, so 64 in flight cost little; a slow endpoint holds only its share.
    concurrency: int = variable(
        "SLUICE_WEBHOOK_CONCURRENCY", ONE_UP, 64, "Webhook sends in flight per dispatcher process."
    )
    per_endpoint_concurrency: int = variable(
        "SLUICE_WEBHOOK_PER_ENDPOINT_CONCURRENCY",
        ONE_UP,
        4,
        "…and to one endpoint, so a slow one holds only its share.",
    )
    allowed_networks: tuple[Network, ...] = variable(
        "SLUICE_WEBHOOK_ALLOWED_NETWORKS",
        Networks(),
        (),
        "Networks the SSRF guard lets through although private (tests, private deployments), for webhook "
        "deliveries and domain-verification fetches. Off by default.",
        "empty",
    )
    verify: str | bool = variable(
        "SLUICE_WEBHOOK_CA_BUNDLE",
        CaBundle(),
        True,
        "PEM bundle to trust for receivers' certificates; `off` disables verification (never in production).",
        "system CAs",
    )
    # Longer than the timeout plus a margin, or a slow send would be claimed twice.
    lease_seconds: int = variable(
        "SLUICE_WEBHOOK_LEASE_SECONDS",
        ONE_UP,
        60,
        "A claimed delivery not finished in this time is claimed again by another worker.",
    )
    poll_seconds: float = variable(
        "SLUICE_WEBHOOK_POLL_SECONDS", POSITIVE, 0.5, "How often an idle dispatcher looks for new events."
    )
    disable_after_failures: int = variable(
        "SLUICE_WEBHOOK_DISABLE_AFTER_FAILURES",
        ONE_UP,
        10,
        "An endpoint is disabled after this many failed attempts in a row…",
    )
    disable_after_hours: float = variable(
        "SLUICE_WEBHOOK_DISABLE_AFTER_HOURS", Number(0), 24.0, "…spanning at least this long."
    )
    outbox_keep_days: int = variable(
        "SLUICE_WEBHOOK_OUTBOX_KEEP_DAYS", ZERO_UP, 7, "Fanned-out outbox events are pruned after this."
    )
    dispatcher_metrics: str = variable(
        "SLUICE_DISPATCHER_METRICS",
        LISTEN,
        "127.0.0.1:9102",
        "The dispatcher's Prometheus `/metrics` (outbox backlog, attempts, and the ingest consumer group's lag "
        "seen from Kafka); `off` serves none.",
    )


@dataclass(frozen=True)
class McpConfig:
    """The MCP gateway (in the API process)"""

    config_path: Path = variable(
        "SLUICE_MCP_CONFIG",
        FsPath(),
        ROOT / "mcp_servers.json",
        "The MCP server registry (JSON).",
        "`<repo>/mcp_servers.json`",
    )
    files_root: Path = variable(
        "SLUICE_MCP_ROOT",
        FsPath(),
        ROOT / ".services" / "mcp-files",
        "Root of the filesystem server; each workspace gets `<root>/<workspace_id>`.",
        "`<repo>/.services/mcp-files`",
    )
    # A tool call holds an HTTP request open; past 30 s a client or proxy gives up anyway.
    timeout_seconds: float = variable(
        "SLUICE_MCP_TIMEOUT_SECONDS",
        Number(0, MCP_MAX_TIMEOUT_SECONDS, low_included=False),
        30.0,
        "Default deadline of an MCP tool call (an entry may set `timeout_seconds`, up to 300).",
    )
    # 1 MiB: a source file or a page of notes, small enough to return inside a JSON answer.
    max_file_bytes: int = variable(
        "SLUICE_MCP_MAX_FILE_BYTES", ONE_UP, 1 << 20, "Largest file the filesystem server reads or writes."
    )
    max_entries: int = variable(
        "SLUICE_MCP_MAX_LIST_ENTRIES",
        ONE_UP,
        1000,
        "Most entries a directory listing returns (then `truncated: true`).",
    )
    # External tool lists change only when the server is redeployed; a minute keeps lists cheap.
    tools_cache_seconds: float = variable(
        "SLUICE_MCP_TOOLS_CACHE_SECONDS", Number(0), 60.0, "How long an external server's tool list is cached."
    )
    allow_stdio: bool = variable(
        "SLUICE_MCP_ALLOW_STDIO",
        Flag(),
        False,
        "Allow registry entries of type `stdio` (runs a command; see MCP gateway).",
    )


@dataclass(frozen=True)
class Config:
    """The whole tree; `Config()` is every default."""

    shared: SharedConfig = field(default_factory=SharedConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    mcp: McpConfig = field(default_factory=McpConfig)


def sections() -> list[type]:
    """The section classes in Config's order."""
    return [_section_class(f) for f in fields(Config)]


def _section_class(f: Field[Any]) -> type:
    """Each Config field defaults to a fresh instance of its section: its default_factory is the class."""
    if not isinstance(f.default_factory, type):
        raise TypeError(f"Config.{f.name} is not a section (its default_factory is no class)")
    return f.default_factory


# -- reading ---------------------------------------------------------------------------------------


def load(environ: Mapping[str, str]) -> Config:
    """The tree from `environ`; ConfigError naming the first variable whose value is refused."""
    return Config(**{f.name: _section(_section_class(f), environ) for f in fields(Config)})


def load_or_exit(environ: Mapping[str, str] = os.environ) -> Config:
    """For entry points: a refused value stops the start with one line on stderr, no traceback."""
    try:
        return load(environ)
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


def _section(cls: type, environ: Mapping[str, str]):
    return cls(**{f.name: _read(f, environ) for f in fields(cls)})


def _read(f, environ: Mapping[str, str]):
    var: Variable = f.metadata["variable"]
    raw = environ.get(var.name, "").strip()
    if not raw:
        return f.default
    try:
        return var.cast(raw)
    except ValueError:
        raise ConfigError(f"{var.name} has value {_masked(raw)!r}; expected {var.cast.allowed}") from None


def _masked(raw: str) -> str:
    """A URL's password is not repeated in an error message (which ends up in logs)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", raw)


# -- README's configuration tables -----------------------------------------------------------------


def markdown() -> str:
    """README's tables, one per section: names, defaults, what is allowed, meanings."""
    blocks = []
    for cls in sections():
        rows = [f"**{cls.__doc__}:**", "", "| Variable | Default | Allowed | Meaning |", "|---|---|---|---|"]
        for f in fields(cls):
            var = f.metadata["variable"]
            rows.append(f"| `{var.name}` | {_shown_default(f.default, var)} | {var.cast.allowed} | {var.meaning} |")
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks) + "\n"


def _shown_default(value, var: Variable) -> str:
    if var.shown is not None:
        return var.shown
    if isinstance(value, Path) or str(ROOT) in str(value) or value in ("", ()):
        raise ValueError(f"{var.name}: give the default as README should show it")  # no machine paths in README
    if isinstance(value, bool):
        return "`on`" if value else "`off`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m storage.config", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print README's configuration tables")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(), end="")
        return
    load_or_exit()  # without --markdown: check this environment as every entry point will
    print(f"configuration valid: {sum(len(fields(cls)) for cls in sections())} variables checked")


if __name__ == "__main__":
    main()
