"""Ingest stage "lag": how far the consumer is behind, per topic, for the log and for metrics.

Lag here counts records in Kafka that are not yet in ClickHouse: a partition's high watermark
(from the last fetch) minus the offset this consumer last committed (or its position before
the first commit). Records fetched but still in the open batch count as lag.
"""

import logging
import time

log = logging.getLogger(__name__)

# A lag line this often: often enough to watch a backlog drain, rare enough to read the log.
LOG_EVERY_SECONDS = 10.0


def lag_by_topic(consumer, committed: dict) -> dict[str, int]:
    lag: dict[str, int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        done = committed.get(tp)
        if high is None or done is None:
            continue
        lag[tp.topic] = lag.get(tp.topic, 0) + max(high - done, 0)
    return lag


class LagReporter:
    def __init__(self, every: float = LOG_EVERY_SECONDS):
        self.every = every
        self.last: dict[str, int] = {}
        self._next = time.monotonic() + every

    def update(self, consumer, committed: dict, stats: dict) -> None:
        self.last = lag_by_topic(consumer, committed)
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
