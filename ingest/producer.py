"""Durable hand-off to Kafka: a 2xx is sent only once an event is acknowledged or spooled.

INTERIM VERSION (interface only): sends with acks=all and waits; the on-disk spool, replay,
deadline and SpoolFull arrive with the full implementation. The interface below is the contract
app/ relies on.
"""

import asyncio

from aiokafka import AIOKafkaProducer


class SpoolFull(Exception):
    """Kafka is away and the spool holds its maximum: answer 503 with Retry-After."""

    def __init__(self, retry_after: int = 5):
        super().__init__("the on-disk spool is full")
        self.retry_after = retry_after


class DurableProducer:
    def __init__(self, bootstrap_servers: str, spool_dir: str, *, linger_ms: int = 5,
                 batch_bytes: int = 262_144, ack_deadline_ms: int = 1500, spool_max_bytes: int = 1 << 30,
                 partitions: int = 6, topics: tuple[str, ...] = ()):
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True,
            linger_ms=linger_ms, max_batch_size=batch_bytes, compression_type="lz4")
        self.started = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Never fails because Kafka is away: the API serves and spools meanwhile."""

    async def _ensure(self) -> None:
        if not self.started:
            async with self._starting:
                if not self.started:
                    await self.producer.start()
                    self.started = True

    async def send(self, topic: str, key: bytes, value: bytes) -> str:
        """Returns "kafka" or "spool" once the record is durable; raises SpoolFull."""
        return await self.send_many(topic, [(key, value)])

    async def send_many(self, topic: str, records: list[tuple[bytes, bytes]]) -> str:
        """All records durable (in one spool write when spooled); order kept per key."""
        await self._ensure()
        futures = [await self.producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return "kafka"

    def send_soon(self, topic: str, key: bytes, value: bytes) -> None:
        """Best effort, not awaited (drop counters): never raises."""
        asyncio.get_running_loop().create_task(self._quiet(topic, key, value))

    async def _quiet(self, topic, key, value):
        try:
            await self.send(topic, key, value)
        except Exception:  # noqa: BLE001
            pass

    async def stop(self) -> None:
        """Flush what is in flight (to Kafka or the spool) and close."""
        if self.started:
            await self.producer.stop()

    def stats(self) -> dict[str, int]:
        return {}
