"""Ingest stage "lag": how far the consumer is behind, per topic for the log, per partition for
`sluice_consumer_lag_records`.

Lag here counts records in Kafka that are not yet in ClickHouse: a partition's high watermark
(from the last fetch) minus the offset this consumer last committed (or its position before
the first commit). Records fetched but still in the open batch count as lag. This is the
worker's own view and goes with it; the dispatcher reports the group's lag from Kafka
(ingest/worker/group_lag.py), which keeps growing while no worker runs.
"""

import logging
import time

from ingest.worker.metrics import LagGauge

log = logging.getLogger(__name__)

# A lag line this often: often enough to watch a backlog drain, rare enough to read the log.
LOG_EVERY_SECONDS = 10.0
# The gauge this often: Prometheus scrapes every 15 s or so, and the loop may turn hundreds of times a second.
GAUGE_EVERY_SECONDS = 1.0


def lag_by_partition(consumer, committed: dict) -> dict[tuple[str, int], int]:
    """(topic, partition) → lag, for the assigned partitions whose high watermark is known."""
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        done = committed.get(tp)
        if high is not None and done is not None:
            lag[(tp.topic, tp.partition)] = max(high - done, 0)
    return lag


def by_topic(lag: dict[tuple[str, int], int]) -> dict[str, int]:
    topics: dict[str, int] = {}
    for (topic, _partition), n in lag.items():
        topics[topic] = topics.get(topic, 0) + n
    return topics


class LagReporter:
    def __init__(self, every: float = LOG_EVERY_SECONDS):
        self.every = every
        self.last: dict[str, int] = {}
        self.gauge = LagGauge()
        self._next = time.monotonic() + every
        self._next_gauge = 0.0

    def update(self, consumer, committed: dict, stats: dict) -> None:
        lag = lag_by_partition(consumer, committed)
        self.last = by_topic(lag)
        if time.monotonic() >= self._next_gauge:
            self._next_gauge = time.monotonic() + GAUGE_EVERY_SECONDS
            self.gauge.set(lag)
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            per_topic = ", ".join(f"{topic} {n}" for topic, n in sorted(self.last.items())) or "no partitions"
            log.info(
                "lag: %s; inserted %d rows in %d batches, %d dead letters",
                per_topic,
                stats["rows"],
                stats["batches"],
                stats["dead_letters"],
            )
