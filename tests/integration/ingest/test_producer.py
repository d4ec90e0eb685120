"""The durable producer (ingest/handoff/producer.py) against real Kafka: the stack's broker, and a
dedicated one that these tests stop and start to play an outage."""

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from ingest.handoff import producer as producer_module
from ingest.handoff.producer import DurableProducer, SpoolFull
from ingest.handoff.spool import claim
from storage.local_stack.kafka import DedicatedBroker

DEADLINE_MS = 500
# The outage tests tell a send that went to the spool at once from one that waited out the
# deadline by the time they took, so their deadline is one a loaded machine's fsyncs never near.
OUTAGE_DEADLINE_MS = 2000
# What a loaded 2-core machine may add to a wait (scheduling, an fsync queued behind other I/O):
# a bound on how long something may take, never a guess at how long it does.
SLACK = 10.0


@pytest.fixture
def topic():
    return f"h1-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stack_kafka():
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    dedicated = DedicatedBroker(tmp_path_factory.mktemp("kafka"))
    yield dedicated
    dedicated.stop(kill=True)


def producer_for(bootstrap: str, spool_dir: Path, topic: str, **options) -> DurableProducer:
    options = {"ack_deadline_ms": DEADLINE_MS, "partitions": 2, "topics": (topic,), **options}
    return DurableProducer(bootstrap, str(spool_dir), **options)


async def read_all(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    """Every record of the topic, partition by partition (order holds within a partition)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        await wait_for(consumer.assignment, 10, "the topic's partitions")
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        records = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records += [(m.key, m.value) for m in batch.get(tp, [])]
        return records
    finally:
        await consumer.stop()


def by_key(records) -> dict[bytes, list[bytes]]:
    grouped: dict[bytes, list[bytes]] = {}
    for key, value in records:
        grouped.setdefault(key, []).append(value)
    return grouped


def numbered(count: int, keys: int = 3) -> list[tuple[bytes, bytes]]:
    return [(b"ws-%d" % (i % keys), b"event-%05d" % i) for i in range(count)]


async def within(seconds: float, awaitable, what: str):
    """The result of `awaitable`, which must come within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise AssertionError(f"{what} took over {seconds:g} s") from None


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_concurrent_sends_are_acknowledged_by_kafka_and_read_back_exactly_once(stack_kafka, topic, tmp_path):
    producer = producer_for(stack_kafka, tmp_path, topic)
    await producer.start()
    records = numbered(300)
    try:
        results = await asyncio.gather(
            *(producer.send(topic, k, v) for k, v in records[:200]), producer.send_many(topic, records[200:])
        )
    finally:
        await producer.stop()
    assert set(results) == {"kafka"}
    assert by_key(await read_all(stack_kafka, topic)) == by_key(records)
    assert producer.stats()["sent_kafka"] == 300 and producer.stats()["sent_spool"] == 0


async def test_stop_flushes_sends_still_in_flight_and_send_soon(stack_kafka, topic, tmp_path):
    producer = producer_for(stack_kafka, tmp_path, topic, linger_ms=300)
    await producer.start()
    records = numbered(50)
    pending = [asyncio.ensure_future(producer.send(topic, k, v)) for k, v in records[:40]]
    for key, value in records[40:]:
        producer.send_soon(topic, key, value)
    await asyncio.sleep(0)  # one turn of the loop: every send starts and is enqueued, lingering
    assert producer.stats()["inflight"] == 50
    await producer.stop()
    assert {task.result() for task in pending} == {"kafka"}
    assert by_key(await read_all(stack_kafka, topic)) == by_key(records)


async def test_records_left_by_a_dead_process_are_replayed_at_start(stack_kafka, topic, tmp_path):
    orphan = claim(tmp_path, 1 << 20)  # a previous worker spooled these, then died
    await orphan.append_many(topic, numbered(20))
    await orphan.close()
    producer = producer_for(stack_kafka, tmp_path, topic)
    await producer.start()
    try:
        await wait_for(lambda: not producer.stats()["spooling"], 30, "the replay")
        assert await producer.send(topic, b"ws-0", b"after") == "kafka"
    finally:
        await producer.stop()
    assert by_key(await read_all(stack_kafka, topic)) == by_key(numbered(20) + [(b"ws-0", b"after")])
    assert list(tmp_path.iterdir()) == []  # both directories drained and removed


async def test_a_full_spool_refuses_with_spoolfull(topic, tmp_path):
    producer = producer_for(f"127.0.0.1:{_dead_port()}", tmp_path, topic, spool_max_bytes=4096)
    await producer.start()
    try:
        with pytest.raises(SpoolFull):
            for key, value in numbered(1000):
                assert await producer.send(topic, key, value) == "spool"
        assert producer.stats()["spool_full_refusals"] == 1
        assert 0 < producer.stats()["spool_bytes"] <= 4096
    finally:
        await producer.stop()


async def test_kafka_away_at_start_spools_quickly_then_replays_in_order_once(broker, topic, tmp_path):
    broker.stop()
    producer = producer_for(broker.bootstrap_servers, tmp_path, topic, ack_deadline_ms=OUTAGE_DEADLINE_MS)
    deadline = OUTAGE_DEADLINE_MS / 1000
    # start() waits for Kafka up to the deadline, not until it comes back: the API serves meanwhile.
    await within(deadline + SLACK, producer.start(), "start() with Kafka away")
    records = numbered(60)
    try:
        began = time.monotonic()
        for key, value in records[:30]:
            assert await within(deadline + SLACK, producer.send(topic, key, value), "a send") == "spool"
        spent = time.monotonic() - began
        # Never connected, nothing to wait for: had each send waited out the deadline, 60 s.
        assert spent < 30 * deadline / 2, f"30 sends took {spent:.1f} s: they waited for Kafka"
        assert await producer.send_many(topic, records[30:]) == "spool"
        assert producer.stats()["spool_records_pending"] == 60
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: not producer.stats()["spooling"], 60, "the replay")
        assert await producer.send(topic, b"ws-0", b"after") == "kafka"
    finally:
        await producer.stop()
    assert producer.stats()["replayed"] == 60 and producer.stats()["spool_records_pending"] == 0
    assert by_key(await read_all(broker.bootstrap_servers, topic)) == by_key(records + [(b"ws-0", b"after")])


async def test_kafka_lost_mid_run_spools_within_the_deadline_and_nothing_is_doubled(broker, topic, tmp_path):
    if broker.process is None:
        await asyncio.to_thread(broker.start)
    producer = producer_for(broker.bootstrap_servers, tmp_path, topic, ack_deadline_ms=OUTAGE_DEADLINE_MS)
    deadline = OUTAGE_DEADLINE_MS / 1000
    await producer.start()
    records = numbered(90)
    try:
        assert await producer.send_many(topic, records[:30]) == "kafka"
        broker.stop(kill=True)
        # Concurrent sends all wait out the same deadline: the outage costs each one deadline at
        # most, where 30 waiting one after another would take 60 s.
        outage = asyncio.gather(*(producer.send(topic, k, v) for k, v in records[30:60]))
        assert set(await within(deadline + SLACK, outage, "30 concurrent sends")) == {"spool"}
        began = time.monotonic()
        for key, value in records[60:]:  # the spool has records: later sends go there at once
            assert await producer.send(topic, key, value) == "spool"
        spent = time.monotonic() - began
        assert spent < 30 * deadline / 2, f"30 sends took {spent:.1f} s: they waited for Kafka"
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: not producer.stats()["spooling"], 90, "the replay")
        assert await producer.send(topic, b"ws-0", b"after") == "kafka"
    finally:
        await producer.stop()
    # The sends that timed out were also in the producer's batch when Kafka came back: those
    # acknowledgements cancel the spooled copies, so each record is there once, in order.
    assert by_key(await read_all(broker.bootstrap_servers, topic)) == by_key(records + [(b"ws-0", b"after")])


async def test_stop_while_kafka_is_lost_spools_what_is_unacknowledged_for_the_next_process(
    broker, topic, tmp_path, monkeypatch
):
    monkeypatch.setattr(producer_module, "FLUSH_TIMEOUT", 2.0)
    if broker.process is None:
        await asyncio.to_thread(broker.start)
    records = numbered(30)
    first = producer_for(broker.bootstrap_servers, tmp_path, topic)
    await first.start()
    # start() waits for the connection only up to the ack deadline; on a loaded machine a broker
    # just (re)started takes longer, and the first records would then rightly be spooled.
    await wait_for(lambda: first._connected.is_set(), 60, "the producer's connection to Kafka")
    assert await first.send_many(topic, records[:10]) == "kafka"
    broker.stop(kill=True)
    in_flight = [asyncio.ensure_future(first.send(topic, k, v)) for k, v in records[10:]]
    await asyncio.sleep(0)  # one turn of the loop: every send starts
    assert first.stats()["inflight"] == 20
    # SIGTERM during the outage: stop() gives up on Kafka after FLUSH_TIMEOUT, it does not wait for it.
    await within(producer_module.FLUSH_TIMEOUT + SLACK, first.stop(), "stop() with Kafka lost")
    assert {task.result() for task in in_flight} == {"spool"}
    assert first.stats()["spool_records_pending"] == 20
    await asyncio.to_thread(broker.start)
    second = producer_for(broker.bootstrap_servers, tmp_path, topic)
    await second.start()  # adopts the first one's directory
    try:
        await wait_for(lambda: not second.stats()["spooling"], 60, "the replay")
    finally:
        await second.stop()
    assert second.stats()["replayed"] == 20
    assert by_key(await read_all(broker.bootstrap_servers, topic)) == by_key(records)


def _dead_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
