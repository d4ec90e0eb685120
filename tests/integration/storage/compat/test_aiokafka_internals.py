"""Contract of storage/compat/aiokafka_internals.py: each function against a real AIOKafkaProducer
on the local Kafka. A failure here after an aiokafka upgrade names what the hand-off relied on."""

import asyncio
import os
import uuid

import pytest
from aiokafka import AIOKafkaProducer, codec
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from ingest.topics import ensure_topics
from storage.compat import aiokafka_internals

PARTITIONS = 6


@pytest.fixture
def bootstrap():
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
async def topic(bootstrap):
    name = f"compat-test-{uuid.uuid4().hex[:10]}"
    await ensure_topics(bootstrap, (name,), PARTITIONS)
    yield name
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def started(bootstrap: str, **options) -> AIOKafkaProducer:
    """Configured as ingest/handoff/producer.py configures its own."""
    options = {"acks": "all", "enable_idempotence": True, "compression_type": "lz4", **options}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await producer.start()
    return producer


async def test_the_partitioner_puts_every_key_where_send_puts_it(bootstrap, topic):
    producer = await started(bootstrap)
    try:
        choose = aiokafka_internals.partitioner(producer)
        every = sorted(await producer.partitions_for(topic))
        assert len(every) == PARTITIONS
        chosen, sent = [], []
        for i in range(60):
            key = f"visitor-{i}".encode()
            chosen.append(choose(key, every, list(every)))  # as ingest/handoff/kafka_batches.py calls it
            sent.append((await producer.send_and_wait(topic, b"{}", key=key)).partition)
    finally:
        await producer.stop()
    assert chosen == sent
    assert len(set(chosen)) > 1  # a partitioner that ignored the key would not get here


async def test_fail_pending_fails_what_the_producer_holds_with_the_error_given(bootstrap, topic):
    producer = await started(bootstrap, linger_ms=60_000)
    try:
        await producer.partitions_for(topic)
        builder = producer.create_batch()  # left open, so it lingers and send() below joins it
        builder.append(timestamp=None, key=b"k", value=b"{}", headers=[])
        submitted = await producer.send_batch(builder, topic, partition=0)
        record = await producer.send(topic, b"{}", key=b"k", partition=0)
        aiokafka_internals.fail_pending(producer, KafkaError("closing now"))
        for future in (submitted, record):
            with pytest.raises(KafkaError, match="closing now"):
                await asyncio.wait_for(future, 5)
        await asyncio.wait_for(producer.flush(), 5)  # nothing is left for flush() or stop() to wait for
    finally:
        await asyncio.wait_for(producer.stop(), 10)


async def test_batches_sent_either_way_are_compressed_by_the_replaced_lz4_encoder(bootstrap, topic):
    compressed = []

    def encode(payload) -> bytes:
        compressed.append(len(payload))
        return codec.lz4_encode(payload, level=1)

    producer = await started(bootstrap)
    previous = aiokafka_internals.replace_lz4_encode(encode)
    try:
        builder = producer.create_batch()  # as ingest/handoff/kafka_batches.py sends
        for i in range(20):  # 10 kB: within the default batch size
            assert builder.append(timestamp=None, key=b"k%d" % i, value=b"x" * 500, headers=[]) is not None
        builder.close()
        await (await producer.send_batch(builder, topic, partition=0))
        assert len(compressed) == 1 and compressed[0] > 20 * 500
        await producer.send_and_wait(topic, b"y" * 500, key=b"k")  # as the spool's replay sends
        assert len(compressed) == 2
    finally:
        assert aiokafka_internals.replace_lz4_encode(previous) is encode
        await producer.stop()
