"""The ingest worker's Prometheus metrics: lag, inserts, replays, dead letters, and the ClickHouse
HTTP interface's queries (it runs inside the worker).

In prometheus_client's default registry, served by `python -m ingest` on SLUICE_WORKER_METRICS
(storage/telemetry/metrics.py). Only the worker imports this module, so no other process
reports these names. Label values are bounded: tables, topics and partitions of this deployment.
"""

import time

from prometheus_client import Counter, Gauge, Histogram

from storage.clickhouse.http_interface import QueryOutcome

# A 100k-row INSERT takes about a second through chdb; a small batch a few milliseconds.
INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Analysts' queries stop at SLUICE_CLICKHOUSE_HTTP_MAX_EXECUTION_SECONDS (60 s by default).
QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

LAG = Gauge(
    "sluice_consumer_lag_records",
    "Records in Kafka not yet in ClickHouse, per partition this worker is assigned (high watermark - committed)",
    ["topic", "partition"],
)
ROWS_INSERTED = Counter("sluice_consumer_rows_inserted_total", "Rows inserted into ClickHouse", ["table"])
BATCHES_INSERTED = Counter(
    "sluice_consumer_batches_inserted_total", "Successful INSERT statements into ClickHouse", ["table"]
)
INSERT_DURATION = Histogram(
    "sluice_consumer_insert_duration_seconds", "Duration of a successful INSERT", ["table"], buckets=INSERT_BUCKETS
)
LAST_INSERT = Gauge("sluice_consumer_last_insert_timestamp_seconds", "Unix time of the last successful INSERT")
REPLAYS_SKIPPED = Counter(
    "sluice_consumer_replays_skipped_total",
    "Records Kafka delivered again and the worker skipped: ClickHouse (or the open batch) held them already",
    ["topic"],
)
DEAD_LETTERS = Counter(
    "sluice_consumer_dead_letters_total", "Records ClickHouse refused, sent to the dead-letter topic", ["topic"]
)
QUERIES = Counter(
    "sluice_clickhouse_queries_total", "Queries to the worker's ClickHouse HTTP interface, by outcome", ["outcome"]
)
QUERY_DURATION = Histogram(
    "sluice_clickhouse_query_duration_seconds",
    "From request to the end of the answer, for queries given to a reader (not those refused as busy "
    "or unauthenticated)",
    buckets=QUERY_BUCKETS,
)


def declare(tables: dict[str, str]) -> None:
    """Every series at zero from the start (topic → table), so rates and sums exist before the first event."""
    for topic, table in tables.items():
        ROWS_INSERTED.labels(table)
        BATCHES_INSERTED.labels(table)
        INSERT_DURATION.labels(table)
        REPLAYS_SKIPPED.labels(topic)
        DEAD_LETTERS.labels(topic)
    for outcome in QueryOutcome:
        QUERIES.labels(outcome)


def inserted(table: str, rows: int, seconds: float) -> None:
    """One INSERT of `rows` rows succeeded in `seconds` (thread-safe: called on the ClickHouse thread)."""
    ROWS_INSERTED.labels(table).inc(rows)
    BATCHES_INSERTED.labels(table).inc()
    INSERT_DURATION.labels(table).observe(seconds)
    LAST_INSERT.set(time.time())


def skipped(counts: dict[str, int]) -> None:
    for topic, n in counts.items():
        REPLAYS_SKIPPED.labels(topic).inc(n)


def query_done(outcome: QueryOutcome, seconds: float | None) -> None:
    """The HTTP interface's observer: one query ended (`seconds` None: it never reached a reader)."""
    QUERIES.labels(outcome).inc()
    if seconds is not None:
        QUERY_DURATION.observe(seconds)


class LagGauge:
    """`sluice_consumer_lag_records` of the partitions assigned now: a revoked one's series goes."""

    def __init__(self) -> None:
        self.shown: set[tuple[str, str]] = set()

    def set(self, lag: dict[tuple[str, int], int]) -> None:
        now = {(topic, str(partition)): n for (topic, partition), n in lag.items()}
        for labels in self.shown - now.keys():
            LAG.remove(*labels)
        for labels, n in now.items():
            LAG.labels(*labels).set(n)
        self.shown = set(now)
