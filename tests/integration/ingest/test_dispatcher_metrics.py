"""The webhook dispatcher's /metrics: attempts by outcome (delivered, failed, refused by the SSRF
guard, timeout), disabled endpoints and the outbox backlog from a real `python -m
ingest.webhooks.dispatcher` on a database of its own, and the ingest consumer group's lag as the
dispatcher reads it from real Kafka, growing while no worker commits."""

import asyncio
import ipaddress
import os
import random
import subprocess
import sys
import threading
import uuid
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from ingest.events import Topics
from ingest.topics import ensure_topics
from ingest.webhooks import delivery
from ingest.webhooks.dispatcher import Dispatcher
from ingest.webhooks.signing import generate_secret
from storage.config import WebhooksConfig
from storage.postgres import webhooks
from storage.postgres.pool import create_pool
from tests.conftest import ROOT, Tenants, _free_port, fresh_database
from tests.integration.ingest.test_dispatcher import Clock
from tests.integration.ingest.test_worker_metrics import Samples, total, value, wait_for_metrics
from tests.webhook_receiver import Answer

UNSAFE_URL = "https://10.255.255.1/hook"  # private, outside the allowed 127.0.0.0/8: the guard refuses it


@pytest.fixture
def own_database():
    """A database of this test's own: the dispatcher takes every due delivery it finds."""
    with fresh_database(os.environ["DATABASE_URL"], "sluice_metrics") as dsn:
        yield dsn


def path(name: str) -> str:
    return f"/{uuid.uuid4().hex[:12]}/{name}"


def add_endpoint(tenants: Tenants, workspace_id: int, url: str) -> dict:
    return tenants.run(
        lambda pool: webhooks.create_endpoint(pool, workspace_id, url, ["api_key.created"], generate_secret())
    )


def make_kafka_backlog(bootstrap: str, topics: Topics, group: str) -> None:
    """Five records in pixel[0] of which the group committed two, three in pixel[1] it never committed."""

    async def go():
        await ensure_topics(bootstrap, topics.ingested(), 2)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for partition, n in ((0, 5), (1, 3)):
                for i in range(n):
                    await producer.send_and_wait(topics.pixel, b"{}", key=b"%d" % i, partition=partition)
        finally:
            await producer.stop()
        committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await committer.start()
        try:
            committer.assign([TopicPartition(topics.pixel, 0)])
            await committer.commit({TopicPartition(topics.pixel, 0): 2})
        finally:
            await committer.stop()

    asyncio.run(go())


def produce_more(bootstrap: str, topic: str, partition: int, n: int) -> None:
    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(n):
                await producer.send_and_wait(topic, b"{}", partition=partition)
        finally:
            await producer.stop()

    asyncio.run(go())


def group_lag(samples: Samples, group: str) -> dict[tuple[str, str], float]:
    found = {}
    for (name, labels), v in samples.items():
        if name == "sluice_kafka_consumer_group_lag_records" and dict(labels)["group"] == group:
            found[(dict(labels)["topic"], dict(labels)["partition"])] = v
    return found


def test_a_real_dispatcher_counts_attempts_by_outcome_its_backlog_and_the_groups_lag(
    own_database, https_receiver, tmp_path
):
    tenants, bootstrap = Tenants(own_database), os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    run = f"dispatcher-metrics-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    prefix, group = f"sluice-test-{run}.", run
    topics = Topics.with_prefix(prefix)
    make_kafka_backlog(bootstrap, topics, group)

    ws = tenants.workspace()["id"]
    ok, gone, slow = path("ok"), path("gone"), path("slow")
    https_receiver.script(gone, Answer(410))
    # The first answer is held until the test ends: the 1 s timeout comes first, whatever the load.
    held = threading.Event()
    https_receiver.script(slow, Answer(200, hold=held), Answer(200))
    add_endpoint(tenants, ws, https_receiver.url(ok))
    add_endpoint(tenants, ws, UNSAFE_URL)
    tenants.key(ws)  # api_key.created: to the two endpoints above
    add_endpoint(tenants, ws, https_receiver.url(gone))
    add_endpoint(tenants, ws, https_receiver.url(slow))
    tenants.key(ws)  # …and to all four

    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": own_database,
        "SLUICE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SLUICE_WEBHOOK_CA_BUNDLE": https_receiver.ca_path,
        "SLUICE_WEBHOOK_POLL_SECONDS": "0.1",
        "SLUICE_WEBHOOK_TIMEOUT_SECONDS": "1",
        "SLUICE_DISPATCHER_METRICS": f"127.0.0.1:{port}",
        "SLUICE_KAFKA_TOPIC_PREFIX": prefix,
        "SLUICE_CONSUMER_GROUP": group,
    }
    url = f"http://127.0.0.1:{port}/metrics"
    with open(tmp_path / "dispatcher.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest.webhooks.dispatcher"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        # ok: 2 delivered; unsafe: 2 deliveries refused twice each (the retry 5 s later, the next in 5 min);
        # gone: 410, failed and disabled; slow: a timeout, then delivered on the retry.
        expected = {"delivered": 3, "refused": 4, "failed": 1, "timeout": 1}

        def settled(s: Samples) -> bool:
            attempts = {o: value(s, "sluice_webhook_attempts_total", outcome=o) for o in expected}
            return attempts == expected and value(s, "sluice_webhook_outbox_backlog") == 2

        samples = wait_for_metrics(url, settled, seconds=90)
        assert len(https_receiver.at(ok)) == 2 and len(https_receiver.at(slow)) == 2
        assert value(samples, "sluice_webhook_attempt_duration_seconds_count") == 9
        assert value(samples, "sluice_webhook_endpoints_disabled_total") == 1
        assert value(samples, "sluice_webhook_outbox_oldest_due_seconds") == 0  # the unsafe ones wait 5 min
        assert total(samples, "sluice_build_info", process="dispatcher") == 1

        lag = group_lag(samples, group)
        assert lag == {
            **{(topic, p): 0 for topic in (topics.usage, topics.dropped) for p in ("0", "1")},
            (topics.pixel, "0"): 3,  # 5 − the 2 committed
            (topics.pixel, "1"): 3,  # never committed: all of it
        }
        produce_more(bootstrap, topics.pixel, 1, 4)  # no worker of the group runs: the lag grows
        wait_for_metrics(url, lambda s: group_lag(s, group)[(topics.pixel, "1")] == 7)
    finally:
        held.set()
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, (tmp_path / "dispatcher.log").read_text()[-3000:]


async def test_the_backlog_counts_due_and_retrying_deliveries_and_the_age_of_the_oldest_due(
    own_database, https_receiver
):
    tenants = Tenants(own_database)
    settings = WebhooksConfig(
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),), verify=https_receiver.ca_path, timeout_seconds=5
    )
    flaky = path("flaky")
    https_receiver.script(flaky, Answer(500), Answer(200))
    ws = tenants.workspace()["id"]
    add_endpoint(tenants, ws, https_receiver.url(flaky))
    tenants.key(ws)

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    pool, clock = await create_pool(own_database, 2), Clock()
    try:
        async with delivery.create_client(settings) as client:
            dispatcher = Dispatcher(pool, settings, client, clock, random.Random(7))
            failed, delivered = (sample("sluice_webhook_attempts_total", outcome=o) for o in ("failed", "delivered"))
            start = clock()
            await dispatcher.fan_out()  # one delivery, due now
            clock.at(start + timedelta(seconds=30))
            await dispatcher.measure_backlog()
            assert sample("sluice_webhook_outbox_backlog") == 1
            assert sample("sluice_webhook_outbox_oldest_due_seconds") == 30

            assert await dispatcher.run_once() == 1  # 500: retried about 5 s later
            await dispatcher.measure_backlog()
            assert sample("sluice_webhook_outbox_backlog") == 1
            assert sample("sluice_webhook_outbox_oldest_due_seconds") == 0
            clock.at(start + timedelta(seconds=90))
            await dispatcher.measure_backlog()
            assert 54 <= sample("sluice_webhook_outbox_oldest_due_seconds") <= 56  # 60 s minus the 5 s ± 20 %

            assert await dispatcher.run_once() == 1  # 200
            await dispatcher.measure_backlog()
            assert sample("sluice_webhook_outbox_backlog") == 0
            assert sample("sluice_webhook_outbox_oldest_due_seconds") == 0
            assert sample("sluice_webhook_attempts_total", outcome="failed") == failed + 1
            assert sample("sluice_webhook_attempts_total", outcome="delivered") == delivered + 1
    finally:
        await pool.close()
