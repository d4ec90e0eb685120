"""Configuration, read once from environment variables (README lists every one)."""

import os
from dataclasses import dataclass
from pathlib import Path

from ingest.settings import env_int

ROOT = Path(__file__).resolve().parent.parent


def _flag(raw: str | None, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    return raw.lower() not in ("off", "0", "false", "no")


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
    pixel_rate_limit: int = 300  # requests per minute per client IP (the spec)
    pixel_max_batch: int = 100
    pixel_config_cache_seconds: int = 30
    pixel_keep_bots: bool = False

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
            pixel_rate_limit=env_int("SLUICE_PIXEL_RATE_LIMIT", base.pixel_rate_limit),
            pixel_max_batch=env_int("SLUICE_PIXEL_MAX_BATCH", base.pixel_max_batch),
            pixel_config_cache_seconds=env_int("SLUICE_PIXEL_CONFIG_CACHE_SECONDS", base.pixel_config_cache_seconds),
            pixel_keep_bots=_flag(env.get("SLUICE_PIXEL_KEEP_BOTS"), base.pixel_keep_bots),
        )
