"""The ingest worker's configuration, read once from environment variables (README lists them)."""

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"configuration error: {name} must be an integer, got {raw!r}")


@dataclass(frozen=True)
class WorkerSettings:
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    clickhouse_url: str = f"chdb:///{ROOT / '.services' / 'clickhouse'}"
    kafka_topic_prefix: str = "sluice."
    kafka_partitions: int = 6
    consumer_group: str = "sluice-ingest"
    # A batch is inserted when it holds this many rows or is this old, whichever comes first.
    batch_rows: int = 100_000  # 600k-row drains (bench/consumer.py's clock): 197k rows/s at 100k, 187k at 50k, 192k at 200k
    batch_ms: int = 1000
    events_ttl_days: int = 400
    log_level: str = "info"

    @classmethod
    def from_env(cls) -> "WorkerSettings":
        env = os.environ
        base = cls()
        return cls(
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", base.kafka_bootstrap_servers),
            clickhouse_url=env.get("CLICKHOUSE_URL", base.clickhouse_url),
            kafka_topic_prefix=env.get("SLUICE_KAFKA_TOPIC_PREFIX", base.kafka_topic_prefix),
            kafka_partitions=env_int("SLUICE_KAFKA_PARTITIONS", base.kafka_partitions),
            consumer_group=env.get("SLUICE_CONSUMER_GROUP", base.consumer_group),
            batch_rows=env_int("SLUICE_CONSUMER_BATCH_ROWS", base.batch_rows),
            batch_ms=env_int("SLUICE_CONSUMER_BATCH_MS", base.batch_ms),
            events_ttl_days=env_int("SLUICE_EVENTS_TTL_DAYS", base.events_ttl_days),
            log_level=env.get("SLUICE_LOG_LEVEL", base.log_level),
        )
