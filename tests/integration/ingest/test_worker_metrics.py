"""The ingest worker's /metrics, scraped from a real `python -m ingest` on real Kafka and chdb: rows
counted as ClickHouse holds them, the last insert's time moving, lag per assigned partition, dead
letters per topic, and the ClickHouse HTTP interface's queries by outcome."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from ingest.events import Topics
from ingest.worker.batch import ConsumedRecord, InsertBatch
from storage.clickhouse import readers
from storage.clickhouse.client import chdb_directory
from storage.clickhouse.http_interface import QueryOutcome, outcome_of, read_key_file
from storage.clickhouse.readers import QueryError
from tests.conftest import ROOT, _free_port
from tests.integration.ingest.test_consumer import (
    WAIT_SECONDS,
    Worker,
    fresh_workspace,
    pixel,
    produce,
    produce_pixels,
    usage,
)

TABLES = {"pixel": "events", "usage": "usage_events", "dropped": "dropped_events"}

Samples = dict[tuple[str, frozenset], float]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page: (name, labels) → value."""
    text = httpx.get(url, timeout=10).raise_for_status().text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def wait_for_metrics(url: str, check, seconds: float = WAIT_SECONDS) -> Samples:
    """Scrape until `check(samples)` holds (the process may still be starting); the last scrape otherwise."""
    deadline, samples = time.monotonic() + seconds, {}
    while True:
        with contextlib.suppress(httpx.TransportError):
            samples = scrape(url)
            if check(samples):
                return samples
        shown = {key: v for key, v in samples.items() if key[0].startswith("sluice_")}
        assert time.monotonic() < deadline, f"waited {seconds} s on {url}; last scrape: {shown}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    """A worker of this module's own (topics, group, chdb directory, metrics port): (worker, /metrics URL)."""
    run = f"metrics-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    port = _free_port()
    env = {
        **os.environ,
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{run}.",
        "SLUICE_CONSUMER_GROUP": run,
        "SLUICE_KAFKA_PARTITIONS": "2",
        "CLICKHOUSE_URL": f"chdb://{tmp_path_factory.mktemp('clickhouse-metrics')}",
        "SLUICE_CONSUMER_BATCH_MS": "100",
        "SLUICE_CLICKHOUSE_HTTP": "127.0.0.1:0",
        "SLUICE_WORKER_METRICS": f"127.0.0.1:{port}",
        "SLUICE_LOG_LEVEL": "info",
    }
    worker = Worker(env, tmp_path_factory.mktemp("worker-metrics")).start()
    yield worker, f"http://127.0.0.1:{port}/metrics"
    worker.stop()


def topics_of(worker: Worker) -> Topics:
    return Topics.with_prefix(worker.env["SLUICE_KAFKA_TOPIC_PREFIX"])


def table_counts(worker: Worker) -> dict[str, int]:
    return {table: worker.query(f"SELECT count() FROM {table}")[0][0] for table in TABLES.values()}


def test_rows_inserted_equal_the_rows_clickhouse_holds_and_the_last_insert_time_moves(metered):
    worker, url = metered
    topics, ws = topics_of(worker), fresh_workspace()
    before = time.time()
    produce_pixels(topics.pixel, [pixel(ws, path=f"/{i}", visitor=f"v{i % 3}") for i in range(30)])
    samples = wait_for_metrics(url, lambda s: value(s, "sluice_consumer_rows_inserted_total", table="events") == 30)
    first = value(samples, "sluice_consumer_last_insert_timestamp_seconds")
    assert first is not None and first >= before

    produce(topics.usage, [(b"k", orjson.dumps(usage(ws, "exports", n))) for n in range(1, 8)])
    samples = wait_for_metrics(
        url, lambda s: value(s, "sluice_consumer_rows_inserted_total", table="usage_events") == 7
    )
    assert value(samples, "sluice_consumer_last_insert_timestamp_seconds") > first
    counts = table_counts(worker)
    samples = scrape(url)
    for table, rows in counts.items():
        assert value(samples, "sluice_consumer_rows_inserted_total", table=table) == rows, table
        batches = value(samples, "sluice_consumer_batches_inserted_total", table=table)
        assert value(samples, "sluice_consumer_insert_duration_seconds_count", table=table) == batches
    assert value(samples, "sluice_consumer_batches_inserted_total", table="events") >= 1
    assert total(samples, "sluice_build_info", process="worker") == 1


def test_lag_is_reported_for_each_assigned_partition_and_drains_to_zero(metered):
    worker, url = metered
    assigned = {(topic, str(p)) for topic in topics_of(worker).ingested() for p in range(2)}

    def drained(s: Samples) -> bool:
        shown = {(dict(ls)["topic"], dict(ls)["partition"]) for name, ls in s if name == "sluice_consumer_lag_records"}
        return shown == assigned and total(s, "sluice_consumer_lag_records") == 0

    wait_for_metrics(url, drained)


def test_a_poison_record_counts_one_dead_letter_of_its_topic(metered):
    worker, url = metered
    topics, ws = topics_of(worker), fresh_workspace()
    rows = value(wait_for_metrics(url, lambda s: True), "sluice_consumer_rows_inserted_total", table="events")
    produce_pixels(topics.pixel, [pixel(ws, path="/before")])
    produce(topics.pixel, [(b"k", b"this is not json")])

    def sorted_out(s: Samples) -> bool:
        dead = value(s, "sluice_consumer_dead_letters_total", topic=topics.pixel)
        return dead == 1 and value(s, "sluice_consumer_rows_inserted_total", table="events") == rows + 1

    samples = wait_for_metrics(url, sorted_out)
    assert value(samples, "sluice_consumer_dead_letters_total", topic=topics.usage) == 0
    assert value(samples, "sluice_consumer_rows_inserted_total", table="events") == table_counts(worker)["events"]


def test_clickhouse_http_queries_are_counted_by_outcome_and_timed_when_a_reader_ran_them(metered):
    worker, url = metered
    internal = read_key_file(chdb_directory(worker.env["CLICKHOUSE_URL"]))
    assert internal is not None
    credentials = {"X-ClickHouse-User": internal["user"], "X-ClickHouse-Key": internal["key"]}

    def ask(sql: str, headers=credentials, **params) -> int:
        return httpx.post(internal["url"] + "/", params=params, content=sql, headers=headers, timeout=60).status_code

    outcomes = ("ok", "error", "refused", "timeout", "busy")
    before = scrape(url)
    assert ask("SELECT 1") == 200
    assert ask("SELECT * FROM no_such_table") == 404
    assert ask("SELECT * FROM file('/etc/passwd')") == 403  # refused by the reader's check
    assert ask("SELECT 1", headers={"X-ClickHouse-User": internal["user"], "X-ClickHouse-Key": "wrong"}) == 403
    assert ask("SELECT count() FROM numbers(100000000000)", max_execution_time="1") in (408, 500)
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    counted = {o: delta("sluice_clickhouse_queries_total", outcome=o) for o in outcomes}
    assert counted == {"ok": 1, "error": 1, "refused": 2, "timeout": 1, "busy": 0}
    # The unauthenticated one never reached a reader: four timed.
    assert delta("sluice_clickhouse_query_duration_seconds_count") == 4
    assert delta("sluice_clickhouse_query_duration_seconds_sum") >= 0.9  # the timeout's second at least


def test_a_taken_metrics_port_stops_the_start_naming_the_variable(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {**os.environ, "SLUICE_WORKER_METRICS": address, "CLICKHOUSE_URL": f"chdb://{tmp_path}"}
        done = subprocess.run(
            [sys.executable, "-m", "ingest"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert f"SLUICE_WORKER_METRICS={address}: cannot listen there" in done.stderr


# --- pure bookkeeping behind the counters ----------------------------------------------------------


def records(topic: str, partition: int, offsets) -> list[ConsumedRecord]:
    return [ConsumedRecord(topic, partition, o, None, b"{}") for o in offsets]


def test_replays_skipped_are_told_per_topic_once():
    batch = InsertBatch(100, 1000)
    a, b = TopicPartition("t", 0), TopicPartition("u", 0)
    batch.add({a: records("t", 0, [0, 1, 2]), b: records("u", 0, [0, 1])})
    assert batch.add({a: records("t", 0, [1, 2, 3])}) == 2  # delivered again while the batch holds them
    assert batch.skip_stored({("u", 0): 0, ("t", 0): -1}) == 1  # ClickHouse holds u[0]@0
    assert batch.drain_skipped() == {"t": 2, "u": 1}
    assert batch.drain_skipped() == {}


@pytest.mark.parametrize(
    "code, outcome",
    [
        (readers.TOO_MANY_SIMULTANEOUS_QUERIES, QueryOutcome.BUSY),
        (readers.TIMEOUT_EXCEEDED, QueryOutcome.TIMEOUT),
        (readers.AUTHENTICATION_FAILED, QueryOutcome.REFUSED),
        (readers.READONLY, QueryOutcome.REFUSED),
        (readers.SETTING_CONSTRAINT_VIOLATION, QueryOutcome.REFUSED),
        (60, QueryOutcome.ERROR),  # UNKNOWN_TABLE
    ],
)
def test_a_query_error_maps_to_its_outcome(code, outcome):
    assert outcome_of(QueryError(code, "x")) is outcome
