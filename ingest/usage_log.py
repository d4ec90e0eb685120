"""Usage records to Kafka topic `sluice.usage`, the log ClickHouse's usage_events is built from.

One aiokafka producer per process, acks=all and idempotence on; `publish` returns once
the broker acknowledged the record. (The ingestion work adds the on-disk spool for when
Kafka is away; until then an unacknowledged record is an error the caller handles.)
"""

import asyncio

import orjson
from aiokafka import AIOKafkaProducer

TOPIC = "sluice.usage"
# A usage record is small; waiting 5 ms lets concurrent requests share one batch.
LINGER_MS = 5
SEND_TIMEOUT_SECONDS = 10


class UsageLog:
    def __init__(self, bootstrap_servers: str):
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            compression_type="lz4",
            request_timeout_ms=SEND_TIMEOUT_SECONDS * 1000,
        )
        self.started = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        await self.producer.start()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            await self.producer.stop()

    async def publish(self, event: dict) -> None:
        """Send one usage record keyed by workspace and wait for the acknowledgement."""
        if not self.started:
            # Started on first use, so the API serves its CRUD endpoints while Kafka is away.
            async with self._starting:
                if not self.started:
                    await self.start()
        await self.producer.send_and_wait(TOPIC, orjson.dumps(event), key=str(event["workspace_id"]).encode())
