"""Configuration, read once from environment variables (README lists every one)."""

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ingest.settings import env_int

ROOT = Path(__file__).resolve().parent.parent


def _flag(raw: str | None, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    return raw.lower() not in ("off", "0", "false", "no")


def _nameservers(raw: str) -> tuple:
    """"10.0.0.2, 127.0.0.1:5353, [::1]:53" → ((address, port), …); port 53 unless given."""
    found = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            address, port = part, "53"
            if part.startswith("["):
                address, _, port = part[1:].partition("]")
                port = port[1:] if port.startswith(":") else port or "53"
            elif part.count(":") == 1:
                address, port = part.split(":")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{part!r} has no valid port")
            found.append((str(ipaddress.ip_address(address)), int(port)))
        except ValueError as exc:
            raise SystemExit(f"configuration error: SLUICE_DNS_NAMESERVERS: {exc}")
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://sluice@127.0.0.1:5432/sluice"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    clickhouse_url: str = f"chdb:///{ROOT / '.services' / 'clickhouse'}"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    public_url: str = ""
    max_body_bytes: int = 1_048_576
    # A client has this long from the first read of its body to deliver all of it (else 408)...
    body_timeout_seconds: int = 10
    # ...and this long to send a request's headers, which is also how long an idle keep-alive
    # connection stays open (granian's HTTP/1 header read timeout; at most 60).
    header_timeout_seconds: int = 30
    last_used_flush_seconds: int = 5
    pg_pool_size: int = 10
    log_level: str = "info"
    rate_limits: bool = True
    idempotency_ttl_seconds: int = 86_400  # the spec: repeats within 24 hours are replayed
    upgrade_url: str = "https://sluice.dev/upgrade"
    # How long a workspace's tier and limit overrides are served from memory: a change in
    # Postgres applies within this many seconds, and the hot path skips Postgres meanwhile.
    entitlements_cache_seconds: int = 30
    # Workspace rows kept in memory, dropped on Postgres' change notification (migration 0007);
    # this bounds how long a missed notification could go unnoticed. 0: no cache.
    workspace_cache_seconds: int = 30
    # Ingestion (see ingest/settings.py for the consumer's own knobs).
    kafka_topic_prefix: str = "sluice."
    kafka_partitions: int = 6
    kafka_linger_ms: int = 5
    kafka_batch_bytes: int = 262_144
    # Past this many ms without Kafka's acknowledgement an event goes to the on-disk spool.
    kafka_ack_deadline_ms: int = 1500
    spool_dir: str = str(ROOT / ".services" / "spool")
    spool_max_bytes: int = 1 << 30
    trusted_proxies: str = ""
    # Failed authentications (unknown, expired or revoked keys) per client address per minute,
    # after which that address gets 429 until its budget refills; 0: no limit.
    auth_failures_per_minute: int = 60
    pixel_rate_limit: int = 300  # requests per minute per client IP (the spec)
    pixel_max_batch: int = 100
    pixel_config_cache_seconds: int = 30
    pixel_keep_bots: bool = False
    # Where domain verification asks DNS (TXT records, and the site's addresses for its file
    # fetch): (address, port) pairs; empty: the system's resolver.
    dns_nameservers: tuple = ()

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        base = cls()
        return cls(
            database_url=env.get("DATABASE_URL", base.database_url),
            redis_url=env.get("REDIS_URL", base.redis_url),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", base.kafka_bootstrap_servers),
            clickhouse_url=env.get("CLICKHOUSE_URL", base.clickhouse_url),
            host=env.get("SLUICE_HOST", base.host),
            port=env_int("SLUICE_PORT", base.port),
            workers=env_int("SLUICE_WORKERS", base.workers),
            public_url=env.get("SLUICE_PUBLIC_URL", base.public_url).rstrip("/"),
            max_body_bytes=env_int("SLUICE_MAX_BODY_BYTES", base.max_body_bytes),
            body_timeout_seconds=env_int("SLUICE_BODY_TIMEOUT_SECONDS", base.body_timeout_seconds),
            header_timeout_seconds=env_int("SLUICE_HEADER_TIMEOUT_SECONDS", base.header_timeout_seconds),
            last_used_flush_seconds=env_int("SLUICE_LAST_USED_FLUSH_SECONDS", base.last_used_flush_seconds),
            pg_pool_size=env_int("SLUICE_PG_POOL_SIZE", base.pg_pool_size),
            log_level=env.get("SLUICE_LOG_LEVEL", base.log_level),
            rate_limits=env.get("SLUICE_RATE_LIMITS", "on").lower() not in ("off", "0", "false", "no"),
            idempotency_ttl_seconds=env_int("SLUICE_IDEMPOTENCY_TTL_SECONDS", base.idempotency_ttl_seconds),
            upgrade_url=env.get("SLUICE_UPGRADE_URL", base.upgrade_url),
            entitlements_cache_seconds=env_int("SLUICE_ENTITLEMENTS_CACHE_SECONDS", base.entitlements_cache_seconds),
            workspace_cache_seconds=env_int("SLUICE_WORKSPACE_CACHE_SECONDS", base.workspace_cache_seconds),
            kafka_topic_prefix=env.get("SLUICE_KAFKA_TOPIC_PREFIX", base.kafka_topic_prefix),
            kafka_partitions=env_int("SLUICE_KAFKA_PARTITIONS", base.kafka_partitions),
            kafka_linger_ms=env_int("SLUICE_KAFKA_LINGER_MS", base.kafka_linger_ms),
            kafka_batch_bytes=env_int("SLUICE_KAFKA_BATCH_BYTES", base.kafka_batch_bytes),
            kafka_ack_deadline_ms=env_int("SLUICE_KAFKA_ACK_DEADLINE_MS", base.kafka_ack_deadline_ms),
            spool_dir=env.get("SLUICE_SPOOL_DIR", base.spool_dir),
            spool_max_bytes=env_int("SLUICE_SPOOL_MAX_BYTES", base.spool_max_bytes),
            trusted_proxies=env.get("SLUICE_TRUSTED_PROXIES", base.trusted_proxies),
            auth_failures_per_minute=env_int("SLUICE_AUTH_FAILURES_PER_MINUTE", base.auth_failures_per_minute),
            pixel_rate_limit=env_int("SLUICE_PIXEL_RATE_LIMIT", base.pixel_rate_limit),
            pixel_max_batch=env_int("SLUICE_PIXEL_MAX_BATCH", base.pixel_max_batch),
            pixel_config_cache_seconds=env_int("SLUICE_PIXEL_CONFIG_CACHE_SECONDS", base.pixel_config_cache_seconds),
            pixel_keep_bots=_flag(env.get("SLUICE_PIXEL_KEEP_BOTS"), base.pixel_keep_bots),
            dns_nameservers=_nameservers(env.get("SLUICE_DNS_NAMESERVERS", "")),
        )
