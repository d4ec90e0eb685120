"""Exactly once at the consumer's dangerous moments, on real Kafka and chdb: a worker killed
between an INSERT and its offset commit, a ClickHouse INSERT that fails after part of it landed,
and a consumer-group rebalance while records stream in. Each ends with every record stored once,
proven by sentinels (test_consumer.settle) rather than by watching a count for a while."""

import asyncio
import http.server
import re
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from ingest.events import Topics
from ingest.topics import ensure_topics
from tests.conftest import ROOT, _free_port
from tests.integration.ingest.test_consumer import (
    WAIT_SECONDS,
    Worker,
    fresh_workspace,
    hint,
    pipeline_env,
    pixel,
    produce,
    settle,
    usage,
    wait_for,
)
from tests.integration.ingest.test_worker_metrics import total, wait_for_metrics

PARTITIONS = 3
ASSIGNED = re.compile(r"partitions assigned: (\d+)")


@pytest.fixture
def env(tmp_path):
    """Topics, group and chdb directory of this test alone."""
    return {**pipeline_env("faults", tmp_path / "clickhouse", PARTITIONS), "SLUICE_LOG_LEVEL": "info"}


@pytest.fixture
def worker(env, tmp_path):
    w = Worker(env, tmp_path)
    yield w
    if w.process is not None and w.process.poll() is None:
        w.stop()


def topics_of(env: dict) -> Topics:
    return Topics.with_prefix(env["SLUICE_KAFKA_TOPIC_PREFIX"])


def create_topics(env: dict) -> None:
    """As the worker does at start, so records can be produced before any worker runs."""
    names = (*topics_of(env).ingested(), topics_of(env).dead_letter)
    asyncio.run(ensure_topics(env["KAFKA_BOOTSTRAP_SERVERS"], names, PARTITIONS))


def produce_both(env: dict, ws: int, pixels: int, uses: int) -> None:
    """`pixels` pixel and `uses` usage records of workspace `ws`, keyed by visitor so every partition gets some."""
    topics, events = topics_of(env), [pixel(ws, visitor=f"v{i}") for i in range(pixels)]
    produce(topics.pixel, [(e.visitor_id.encode(), e.encode(hint(e))) for e in events])
    produce(topics.usage, [(b"u%d" % i, orjson.dumps(usage(ws, "api_calls", 1))) for i in range(uses)])


# Rows of a workspace, their distinct event ids, and what the rollup fed by every INSERT counted.
# Raw tables are ReplacingMergeTree: a background merge may collapse a duplicate before it is
# counted; a rollup never does, so it shows a record inserted twice whenever that happened.
COUNTS = """
SELECT
    (SELECT count() FROM events WHERE workspace_id = {ws:UInt64}),
    (SELECT uniqExact(event_id) FROM events WHERE workspace_id = {ws:UInt64}),
    (SELECT sum(events) FROM pageviews_daily WHERE workspace_id = {ws:UInt64}),
    (SELECT count() FROM usage_events WHERE workspace_id = {ws:UInt64}),
    (SELECT uniqExact(event_id) FROM usage_events WHERE workspace_id = {ws:UInt64}),
    (SELECT sum(records) FROM usage_daily WHERE workspace_id = {ws:UInt64})"""


def counts(query, ws: int) -> dict[str, tuple[int, ...]]:
    """table → (rows, distinct event ids, rows its rollup counted) of workspace `ws`."""
    row = tuple(query(COUNTS, {"ws": ws})[0])
    return {"events": row[:3], "usage_events": row[3:]}


def once(pixels: int, uses: int) -> dict[str, tuple[int, ...]]:
    """What counts() shows when each of `pixels` and `uses` records was inserted once."""
    return {"events": (pixels,) * 3, "usage_events": (uses,) * 3}


def query_directory(env: dict, sql: str) -> list[list[str]]:
    """A query on the chdb directory while no worker holds it (`python -m ingest query` runs it in process)."""
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "query", sql],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [line.split("\t") for line in done.stdout.splitlines()]


def committed_offsets(env: dict, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offset of each partition, 0 where it committed none (the topics are new)."""

    async def go():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            group_id=env["SLUICE_CONSUMER_GROUP"],
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            return {tp: await consumer.committed(tp) or 0 for tp in tps}
        finally:
            await consumer.stop()

    return asyncio.run(go())


# --- a SIGKILL between an INSERT and its offset commit ---------------------------------------------


def test_a_worker_killed_between_insert_and_commit_replays_into_exactly_one_row_per_record(env, worker, tmp_path):
    ws, pixels, uses = fresh_workspace(), 2_000, 600
    create_topics(env)
    produce_both(env, ws, pixels, uses)

    # The fault point SIGKILLs the worker once its third batch's INSERT succeeded, before the commit.
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        killed = subprocess.Popen(
            [sys.executable, "-m", "ingest"],
            cwd=ROOT,
            env={**env, "SLUICE_FAULT_KILL_AFTER_BATCHES": "3"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        returncode = killed.wait(WAIT_SECONDS)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert "SLUICE_FAULT_KILL_AFTER_BATCHES=3: killing this worker now" in log.read_text()

    # It died with rows in ClickHouse whose offsets Kafka does not have: the replay to be avoided.
    stored = {
        TopicPartition(topic, int(partition)): (int(high), int(rows), int(distinct))
        for topic, partition, high, rows, distinct in query_directory(
            env,
            "SELECT _topic, _partition, max(_offset), count(), uniqExact(event_id) FROM events "
            "GROUP BY _topic, _partition UNION ALL "
            "SELECT _topic, _partition, max(_offset), count(), uniqExact(event_id) FROM usage_events "
            "GROUP BY _topic, _partition",
        )
    }
    committed = committed_offsets(env, sorted(stored))
    assert all(rows == distinct == high + 1 for high, rows, distinct in stored.values()), stored
    assert all(committed[tp] <= high + 1 for tp, (high, _, _) in stored.items()), (committed, stored)
    uncommitted = sum(high + 1 - committed[tp] for tp, (high, _, _) in stored.items())
    assert uncommitted > 0, f"every stored row was committed: {committed}"
    assert 0 < sum(rows for _, rows, _ in stored.values()) < pixels + uses

    worker.start()
    wait_for(lambda: counts(worker.query, ws), once(pixels, uses))
    settle(worker.query, topics_of(env))
    assert counts(worker.query, ws) == once(pixels, uses)


# --- an INSERT that fails after its table's part landed ----------------------------------------------


class InsertGate(http.server.ThreadingHTTPServer):
    """Where ClickHouse sends the event ids of each INSERT into `events` (a URL-engine table fed by
    a view): answers 503 to the first `refusals` INSERTs, which fails them after their rows reached
    `events` itself (ClickHouse writes a table's part before it runs the views on it). Every event
    id of every attempt is kept, refused or not: an INSERT that sent a row again shows here, where
    no merge collapses it."""

    def __init__(self, refusals: int):
        super().__init__(("127.0.0.1", 0), _GateHandler)
        self.refusals, self.refused, self.accepted = refusals, 0, 0
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def answer(self, body: bytes) -> int:
        with self.lock:
            self.ids += [orjson.loads(line)["event_id"] for line in body.splitlines() if line]
            if self.refused < self.refusals:
                self.refused += 1
                return 503
            self.accepted += 1
            return 200


class _GateHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: InsertGate

    def do_POST(self) -> None:
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size + 2)[:-2]
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.server.answer(body))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


GATE_SCRIPT = """
import sys
from storage.clickhouse import client as clickhouse
client = clickhouse.connect(sys.argv[1])
clickhouse.apply_schema(client)
client.command(
    "CREATE TABLE insert_gate (event_id UUID) ENGINE = URL('http://127.0.0.1:%s/', JSONEachRow)" % sys.argv[2]
)
client.command("CREATE MATERIALIZED VIEW insert_gate_feed TO insert_gate AS SELECT event_id FROM events")
client.close()
"""


@pytest.fixture
def gate(env):
    """An InsertGate refusing the first two INSERTs into `events`, wired into this test's chdb directory."""
    server = InsertGate(refusals=2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = str(server.server_address[1])
    subprocess.run([sys.executable, "-c", GATE_SCRIPT, env["CLICKHOUSE_URL"], port], cwd=ROOT, env=env, check=True)
    yield server
    server.shutdown()
    server.server_close()


def test_an_insert_that_fails_after_its_rows_landed_is_retried_without_storing_them_twice(env, worker, gate):
    ws, pixels, uses = fresh_workspace(), 2_000, 600
    create_topics(env)
    produce_both(env, ws, pixels, uses)
    port = _free_port()
    worker.env = {**env, "SLUICE_WORKER_METRICS": f"127.0.0.1:{port}"}
    worker.start()

    raw = {"events": (pixels, pixels), "usage_events": (uses, uses)}
    wait_for(lambda: {table: found[:2] for table, found in counts(worker.query, ws).items()}, raw)
    settle(worker.query, topics_of(env))
    # Raw rows only: a failed INSERT fed some of the views on `events` (ClickHouse runs them in no
    # fixed order and stops at the failing one), and the retry does not feed them again.
    assert {table: found[:2] for table, found in counts(worker.query, ws).items()} == raw
    # Every row went to ClickHouse in one INSERT attempt: the refused ones were not sent again.
    sent_again = len(gate.ids) - len(set(gate.ids))
    assert (len(set(gate.ids)), sent_again) == (pixels + PARTITIONS, 0)
    assert (gate.refused, gate.accepted > 0) == (2, True)
    log = worker.log.read_text()
    assert log.count("insert failed, retrying") == 2, log[-3000:]
    assert "RECEIVED_ERROR_FROM_REMOTE_IO_SERVER" in log
    # Each refused INSERT had put its rows in `events`: the retry found them there and left them out.
    samples = wait_for_metrics(f"http://127.0.0.1:{port}/metrics", lambda s: True)
    skipped = total(samples, "sluice_consumer_replays_skipped_total", topic=topics_of(env).pixel)
    assert skipped > 0, "the refused INSERTs should have landed their rows before failing"


# --- a rebalance while records stream in -----------------------------------------------------------


class Stream(threading.Thread):
    """Produces pixel and usage records of workspace `ws` in rounds until `stop()`; counts what Kafka
    acknowledged. Keyed by visitor, so every partition of both topics gets records."""

    ROUND = 100  # records of each topic per round; a round every ~20 ms is a few thousand a second

    def __init__(self, env: dict, ws: int):
        super().__init__(daemon=True)
        self.env, self.ws, self.topics = env, ws, topics_of(env)
        self.produced = {"events": 0, "usage_events": 0}
        self.stopping = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except Exception as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"], acks="all", linger_ms=5)
        await producer.start()
        try:
            n = 0
            while not self.stopping.is_set():
                futures = []
                for i in range(n, n + self.ROUND):
                    e = pixel(self.ws, visitor=f"v{i}")
                    futures.append(await producer.send(self.topics.pixel, e.encode(hint(e)), key=b"v%d" % i))
                    value = orjson.dumps(usage(self.ws, "api_calls", 1))
                    futures.append(await producer.send(self.topics.usage, value, key=b"u%d" % i))
                await asyncio.gather(*futures)
                n += self.ROUND
                self.produced = {"events": n, "usage_events": n}
                await asyncio.sleep(0.02)  # pacing: a stream, not a burst
        finally:
            await producer.stop()

    def stop(self) -> dict[str, tuple[int, ...]]:
        """Stop producing; what Kafka acknowledged, as counts() should end up showing it."""
        self.stopping.set()
        self.join(WAIT_SECONDS)
        assert not self.is_alive() and self.error is None, self.error
        return once(self.produced["events"], self.produced["usage_events"])


class Member(threading.Thread):
    """A second member of the worker's consumer group: takes the partitions the group gives it and
    reads them, commits nothing, and leaves on `leave()`."""

    def __init__(self, env: dict):
        super().__init__(daemon=True)
        self.env = env
        self.assignments: list[set[TopicPartition]] = []
        self.fetched, self.leaving = 0, threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._consume())
        except Exception as exc:  # noqa: BLE001 - reported by leave()
            self.error = exc

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"],
            group_id=self.env["SLUICE_CONSUMER_GROUP"],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        consumer.subscribe(list(topics_of(self.env).ingested()), listener=_Recorder(self.assignments))
        await consumer.start()
        try:
            while not self.leaving.is_set():
                fetched = await consumer.getmany(timeout_ms=200)
                self.fetched += sum(len(records) for records in fetched.values())
        finally:
            await consumer.stop()  # leaves the group: its partitions go back to the worker

    def leave(self) -> None:
        self.leaving.set()
        self.join(WAIT_SECONDS)
        assert not self.is_alive() and self.error is None, self.error


class _Recorder(ConsumerRebalanceListener):
    def __init__(self, assignments: list):
        self.assignments = assignments

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        self.assignments.append(set(assigned))


def assignments(worker: Worker) -> list[int]:
    """How many partitions each of the worker's assignments gave it, in order."""
    return [int(n) for n in ASSIGNED.findall(worker.log.read_text())]


def wait_until(condition, what: str, details=lambda: "", seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}; {details()}"
        time.sleep(0.1)


def test_a_group_member_joining_and_leaving_mid_stream_changes_no_count(env, worker):
    ws, all_partitions = fresh_workspace(), PARTITIONS * 3
    worker.start()
    stream, member = Stream(env, ws), Member(env)

    def stored() -> int:
        return counts(worker.query, ws)["events"][0]

    def state() -> str:
        return (
            f"produced {stream.produced}, member took {member.assignments} and read {member.fetched}, "
            f"worker assignments {assignments(worker)}; its log:\n{worker.log.read_text()[-4000:]}"
        )

    stream.start()
    try:
        wait_until(lambda: stored() >= 1_000, "the worker to store 1,000 events", state)
        member.start()
        try:
            # The group gave the member partitions the worker was consuming: the worker lost them
            # mid-stream (its open batch held some of their records).
            wait_until(lambda: any(member.assignments) and member.fetched > 0, "the member to read", state)
            wait_until(lambda: assignments(worker)[-1] < all_partitions, "the worker to lose partitions", state)
        finally:
            member.leave()
        wait_until(lambda: assignments(worker)[-1] == all_partitions, "the worker to get every partition back", state)
        produced_at_leave = stream.produced["events"]
        wait_until(lambda: stored() > produced_at_leave, "records produced after the member left", state)
    finally:
        produced = stream.stop()

    wait_for(lambda: counts(worker.query, ws), produced)
    settle(worker.query, topics_of(env))
    assert counts(worker.query, ws) == produced
    assert len(set().union(*member.assignments)) >= 1 and member.fetched > 0
    assert assignments(worker)[0] == all_partitions and min(assignments(worker)) < all_partitions
