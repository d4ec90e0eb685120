"""Ingest stage "hand-off", the seam: what the API's handlers may ask of whatever takes their events.

The pixel (app/pixel/intake.py, its drop counts through ingest/handoff/drops.py), the usage
records of app/resources/ledger.py and /metrics call exactly these methods; app/main.py alone
chooses the implementation, as PostHog capture's server.rs alone chooses its sink:
- DurableProducer (ingest/handoff/producer.py): Kafka, or the on-disk spool while Kafka is away;
- InMemorySink (below): keeps what it is handed, for in-process tests of the HTTP layer. What
  involves Kafka itself (acknowledgements, the spool, replays) stays tested against Kafka.
"""

import enum
from typing import Protocol


class Durability(enum.StrEnum):
    """Where a send made its records durable (the values are what send() has always returned)."""

    KAFKA = "kafka"  # acknowledged by Kafka within the deadline
    SPOOL = "spool"  # fsync'd to the on-disk spool, replayed to Kafka when it is back


class Sink(Protocol):
    async def send(self, topic: str, key: bytes, value: bytes) -> Durability:
        """Returns once the record is durable; raises SpoolFull (ingest/handoff/spool.py) when it cannot be."""
        ...

    async def send_many(self, topic: str, records: list[tuple[bytes, bytes]]) -> Durability:
        """All records durable together, order kept per key; raises SpoolFull."""
        ...

    def send_soon(self, topic: str, key: bytes, value: bytes) -> None:
        """Best effort, not awaited (drop counts): never raises, may lose the record."""
        ...

    def stats(self) -> dict[str, int]:
        """The producer's counts and gauges by name (sent_kafka, sent_spool, replayed, inflight, …), which
        each API worker publishes as its metrics (storage/telemetry/metrics.py ApiMetrics)."""
        ...


class InMemorySink(Sink):
    """Keeps every record in `sent` as (topic, key, value), in order.

    `fail_with`: an exception every send raises instead, as PostHog's FailSink (SpoolFull(): Kafka
    away and the spool full, which the API answers 503); send_soon then loses its record quietly,
    as the producer's does when its send fails.
    """

    def __init__(self, fail_with: Exception | None = None):
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_with = fail_with

    async def send(self, topic: str, key: bytes, value: bytes) -> Durability:
        return await self.send_many(topic, [(key, value)])

    async def send_many(self, topic: str, records: list[tuple[bytes, bytes]]) -> Durability:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent += [(topic, key, value) for key, value in records]
        return Durability.KAFKA  # stands in for Kafka's acknowledgement

    def send_soon(self, topic: str, key: bytes, value: bytes) -> None:
        if self.fail_with is None:
            self.sent.append((topic, key, value))

    def stats(self) -> dict[str, int]:
        return {"sent_memory": len(self.sent)}

    def values(self, topic: str) -> list[bytes]:
        """The values sent to `topic`, in order."""
        return [value for sent_topic, _key, value in self.sent if sent_topic == topic]
