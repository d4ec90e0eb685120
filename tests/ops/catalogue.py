"""The metrics Sluice serves (README, Operating Sluice): name → (type, labels, process). The alert
rules, the Grafana dashboard and the live test are checked against this one list, and
tests/ops/test_dashboard.py checks that the code defines each, so none of them drifts from the others.

process: which process serves it (api | worker | dispatcher | every).
"""

from typing import NamedTuple


class Metric(NamedTuple):
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    process: str


METRICS: dict[str, Metric] = {
    "sluice_build_info": Metric("gauge", ("version", "commit", "process"), "every"),
    # The API, whole across its worker processes.
    "sluice_http_requests_total": Metric("counter", ("route", "method", "status"), "api"),
    "sluice_http_request_duration_seconds": Metric("histogram", ("route", "method"), "api"),
    "sluice_pixel_events_accepted_total": Metric("counter", ("source",), "api"),
    "sluice_pixel_events_dropped_total": Metric("counter", ("reason", "source"), "api"),
    "sluice_rate_limit_refusals_total": Metric("counter", ("policy",), "api"),
    "sluice_redis_down": Metric("gauge", (), "api"),
    "sluice_redis_fallback_requests_total": Metric("counter", (), "api"),
    "sluice_redis_outages_total": Metric("counter", (), "api"),
    "sluice_producer_inflight_records": Metric("gauge", (), "api"),
    "sluice_producer_ack_duration_seconds": Metric("histogram", (), "api"),
    "sluice_producer_records_total": Metric("counter", ("destination",), "api"),
    "sluice_spool_bytes": Metric("gauge", (), "api"),
    "sluice_spool_records_pending": Metric("gauge", (), "api"),
    "sluice_spool_replayed_total": Metric("counter", (), "api"),
    "sluice_spool_full_refusals_total": Metric("counter", (), "api"),
    "sluice_postgres_pool_connections": Metric("gauge", ("state",), "api"),
    "sluice_postgres_pool_max_connections": Metric("gauge", (), "api"),
    "sluice_redis_pool_connections": Metric("gauge", ("state",), "api"),
    # The ingest worker.
    "sluice_consumer_lag_records": Metric("gauge", ("topic", "partition"), "worker"),
    "sluice_consumer_rows_inserted_total": Metric("counter", ("table",), "worker"),
    "sluice_consumer_batches_inserted_total": Metric("counter", ("table",), "worker"),
    "sluice_consumer_insert_duration_seconds": Metric("histogram", ("table",), "worker"),
    "sluice_consumer_last_insert_timestamp_seconds": Metric("gauge", (), "worker"),
    "sluice_consumer_replays_skipped_total": Metric("counter", ("topic",), "worker"),
    "sluice_consumer_dead_letters_total": Metric("counter", ("topic",), "worker"),
    "sluice_clickhouse_queries_total": Metric("counter", ("outcome",), "worker"),
    "sluice_clickhouse_query_duration_seconds": Metric("histogram", (), "worker"),
    # The webhook dispatcher.
    "sluice_webhook_outbox_backlog": Metric("gauge", (), "dispatcher"),
    "sluice_webhook_outbox_oldest_due_seconds": Metric("gauge", (), "dispatcher"),
    "sluice_webhook_attempts_total": Metric("counter", ("outcome",), "dispatcher"),
    "sluice_webhook_attempt_duration_seconds": Metric("histogram", (), "dispatcher"),
    "sluice_webhook_endpoints_disabled_total": Metric("counter", (), "dispatcher"),
    "sluice_kafka_consumer_group_lag_records": Metric("gauge", ("group", "topic", "partition"), "dispatcher"),
}
# Series names a metric of each type exposes.
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# Prometheus' own series, which rules and panels may use too.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# prometheus_client's process collector, in the worker and the dispatcher (not in the API's multiprocess mode).
PROCESS_SERIES = {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"}


def series_names() -> dict[str, str]:
    """Every series name the metrics expose → its metric's name; prometheus_client's default registry
    adds a `_created` timestamp to each counter and histogram (the API's multiprocess mode does not)."""
    names = {name + suffix: name for name, metric in METRICS.items() for suffix in SUFFIXES[metric.kind]}
    for name, metric in METRICS.items():
        if metric.kind in ("counter", "histogram"):
            names[name.removesuffix("_total") + "_created"] = name
    return names
