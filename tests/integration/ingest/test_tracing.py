"""Tracing end to end against real Kafka, chdb and Postgres, with spans kept in memory: a request
with a `traceparent` → its record on Kafka carries the request span's traceparent → the worker's
insert span links to it; and each webhook attempt has a delivery span. The API layer runs in
process (observed() around a handler that sends through the durable producer); the consumer and
the dispatcher run in process so that their spans reach the same exporter."""

import asyncio
import gc
import os
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from blacksheep import Request, Response
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.http.middleware import observed
from ingest.events import Topics, workspace_key
from ingest.handoff.producer import DurableProducer
from ingest.topics import ensure_topics
from ingest.worker.consumer import Consumer
from storage.clickhouse import client as clickhouse
from storage.clickhouse.writer import ClickHouseThread
from storage.config import load
from storage.telemetry import tracing
from tests.integration.ingest.test_consumer import fresh_workspace, hint, pixel
from tests.integration.ingest.test_dispatcher import (  # noqa: F401 - its fixtures, shared
    dispatch,
    endpoint,
    make_key,
    settings,
    unique_path,
    workspace,
)

WAIT_SECONDS = 60
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01".encode()


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.setup("test", {}, exporter=exporter)
    yield exporter
    tracing.shutdown()


@pytest.fixture
def env(tmp_path):
    run = f"trace-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return {
        **os.environ,
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{run}.",
        "SLUICE_CONSUMER_GROUP": run,
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "SLUICE_CONSUMER_BATCH_ROWS": "100",
        "SLUICE_CONSUMER_BATCH_MS": "50",
    }


async def headers_of(bootstrap: str, topic: str, key: bytes) -> list[tuple[str, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.key == key:
                            return list(record.headers)
    finally:
        await consumer.stop()


async def wait_for_span(exporter: InMemorySpanExporter, found):
    deadline = time.monotonic() + WAIT_SECONDS
    while not (matches := [span for span in exporter.get_finished_spans() if found(span)]):
        assert time.monotonic() < deadline, [span.name for span in exporter.get_finished_spans()]
        await asyncio.sleep(0.1)
    return matches[0]


async def test_a_traced_request_reaches_kafka_and_the_insert_span_links_to_it(spans, env, tmp_path):
    config = load(env)
    bootstrap = config.shared.kafka_bootstrap_servers
    topics = Topics.with_prefix(config.shared.kafka_topic_prefix)
    await ensure_topics(bootstrap, (*topics.ingested(), topics.dead_letter), 1)
    producer = DurableProducer(bootstrap, str(tmp_path / "spool"), partitions=1, topics=(topics.pixel,))
    await producer.start()
    ws = fresh_workspace()
    event = pixel(ws)

    async def track(request):
        await producer.send(topics.pixel, workspace_key(ws), event.encode(hint(event)))
        return Response(202)

    try:
        response = await observed("/v1/track", track, None)(
            Request("POST", b"/v1/track", [(b"traceparent", TRACEPARENT)])
        )
    finally:
        await producer.stop()
    assert response.status == 202
    (server,) = spans.get_finished_spans()
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE
    sent = f"00-{CALLER_TRACE}-{server.context.span_id:016x}-01".encode()
    assert ("traceparent", sent) in await headers_of(bootstrap, topics.pixel, workspace_key(ws))

    thread = ClickHouseThread()
    thresholds = gc.get_threshold()
    stopping = asyncio.Event()
    try:
        client = await thread.call(clickhouse.connect, config.shared.clickhouse_url)
        await thread.call(clickhouse.apply_schema, client)
        consumer = Consumer(config, thread, client)
        await consumer.start()
        running = asyncio.create_task(consumer.run(stopping))
        try:
            insert = await wait_for_span(
                spans,
                lambda span: (
                    span.name == "INSERT events"
                    and any(link.context.trace_id == server.context.trace_id for link in span.links)
                ),
            )
        finally:
            stopping.set()
            await running
            await consumer.stop()
            await thread.call(client.close)
    finally:
        thread.shutdown()
        gc.set_threshold(*thresholds)
    (link,) = [link for link in insert.links if link.context.trace_id == server.context.trace_id]
    assert link.context.span_id == server.context.span_id
    assert insert.parent is None and insert.attributes["db.collection.name"] == "events"


async def test_each_webhook_attempt_has_a_delivery_span(spans, pool, dispatch, workspace, https_receiver):  # noqa: F811
    dispatcher, _ = dispatch
    hook = await endpoint(pool, workspace, https_receiver, unique_path("traced"), events=["api_key.*"])
    await make_key(pool, workspace)
    assert await dispatcher.run_once() >= 1
    (delivery,) = [
        span
        for span in spans.get_finished_spans()
        if span.name == "webhook delivery" and span.attributes["sluice.webhook.endpoint_id"] == hook["id"]
    ]
    assert delivery.parent is None and delivery.status.is_ok
    assert delivery.attributes["http.response.status_code"] == 200
    assert delivery.attributes["sluice.webhook.attempt"] == 1
    assert delivery.attributes["sluice.webhook.event_id"].startswith("evt_")
