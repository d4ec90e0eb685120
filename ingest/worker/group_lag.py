"""The ingest consumer group's lag as Kafka sees it, from outside any worker.

For each partition of the ingest topics: its end offset minus the group's committed offset, or
minus its beginning offset where the group committed none (a worker starts there). The webhook
dispatcher polls this (it runs beside the workers and outlives them), so the number keeps growing
while no worker consumes, which the worker's own gauge (ingest/worker/lag.py) cannot show.

Public aiokafka calls only: the admin client's topic metadata and the group's committed offsets,
a group-less consumer's beginning and end offsets. Topics are listed, never described by name:
a metadata request naming a missing topic makes a broker with auto.create.topics.enable create it.
"""

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

# One poll's budget: end_offsets waits as long as a partition has no leader.
TIMEOUT_SECONDS = 10.0


class GroupLag:
    """`measure()` → {(topic, partition): records}; clients open on first use and again after a failure."""

    def __init__(self, bootstrap_servers: str, group: str, topics: tuple[str, ...]):
        self.bootstrap_servers, self.group, self.topics = bootstrap_servers, group, topics
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def measure(self) -> dict[tuple[str, int], int]:
        """Raises whatever aiokafka raises, or TimeoutError; the next call starts afresh."""
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                return await self._measure()
        except Exception:
            await self.close()
            raise

    async def _measure(self) -> dict[tuple[str, int], int]:
        admin, consumer = await self._clients()
        partitions = [
            TopicPartition(topic["topic"], p["partition"])
            for topic in await admin.describe_topics()
            if topic["topic"] in self.topics and not topic["error_code"]
            for p in topic["partitions"]
        ]
        if not partitions:
            return {}
        committed = await admin.list_consumer_group_offsets(self.group, partitions=partitions)
        ends = await consumer.end_offsets(partitions)
        uncommitted = [tp for tp in partitions if tp not in committed or committed[tp].offset < 0]
        starts = await consumer.beginning_offsets(uncommitted) if uncommitted else {}
        lag = {}
        for tp in partitions:
            done = starts[tp] if tp in starts else committed[tp].offset
            lag[(tp.topic, tp.partition)] = max(ends[tp] - done, 0)
        return lag

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=None)
            self._admin, self._consumer = admin, consumer
            await admin.start()
            await consumer.start()
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
