"""The ingest consumer against real Kafka and chdb: exactly N rows for N records, across kills,
replays and poison; rollups agree with the raw table. Records are produced with aiokafka directly."""

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.events import (
    Drop,
    DropReason,
    PixelEvent,
    Topics,
    ch_time,
    event_id,
    now_ms,
    session_prefix,
    utc_ms,
    workspace_key,
)
from ingest.worker.batch import ConsumedRecord, InsertBatch
from storage.clickhouse.client import worker_reader

ROOT = Path(__file__).resolve().parents[3]
WAIT_SECONDS = 60


# --- helpers -----------------------------------------------------------------------------------


def pixel(workspace_id: int, *, event="pageview", path="/", visitor="v1", epoch_ms=None) -> PixelEvent:
    t = ch_time(epoch_ms or now_ms())
    return PixelEvent(
        event_id=event_id(),
        workspace_id=workspace_id,
        event=event,
        time=t,
        received_at=t,
        client_time=None,
        url=f"https://example.com{path}",
        host="example.com",
        path=path,
        referrer="",
        referrer_host="",
        utm_source="news",
        utm_medium="",
        utm_campaign="",
        utm_term="",
        utm_content="",
        properties='{"a":1}',
        visitor_id=visitor,
        ip_prefix="203.0.113.0",
        user_agent="Mozilla/5.0",
        browser="Firefox",
        browser_version="120.0",
        os="Linux",
        os_version="",
        device="desktop",
        device_brand="",
        device_model="",
        is_bot=False,
        country="",
        region="",
        city="",
        referrer_source="news",
        channel="Unassigned",
        source="json",
    )


def usage(workspace_id: int, feature: str, quantity: int) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "workspace_id": workspace_id,
        "feature": feature,
        "quantity": quantity,
        "metadata": "",
        "idempotency_key": "",
        "occurred_at": ch_time(now_ms()),
    }


def produce(topic: str, records: list[tuple[bytes, bytes]]) -> None:
    async def go():
        producer = AIOKafkaProducer(
            bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"], acks="all", linger_ms=5, max_batch_size=1 << 20
        )
        await producer.start()
        try:
            for future in [await producer.send(topic, value, key=key) for key, value in records]:
                await future
        finally:
            await producer.stop()

    asyncio.run(go())


def produce_pixels(topic: str, events: list[PixelEvent]) -> None:
    """As the API sends them: each with its session hint (a 30-minute timeout)."""
    produce(topic, [(workspace_key(e.workspace_id), e.encode(hint(e))) for e in events])


def hint(e: PixelEvent) -> bytes:
    at = utc_ms(datetime.strptime(e.time, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC))
    return session_prefix(e.visitor_id, "", 1800, at, at)


def wait_for(fetch, expected, seconds=WAIT_SECONDS):
    deadline, value = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        value = fetch()
        if value == expected:
            return value
        time.sleep(0.3)
    raise AssertionError(f"waited {seconds} s for {expected!r}, last saw {value!r}")


def fresh_workspace() -> int:
    return random.randrange(10**9, 10**12)


def settle(query, topics: Topics, bootstrap: str | None = None, seconds: float = WAIT_SECONDS) -> None:
    """Proof that no late duplicate is still on its way, instead of watching a count for a while.

    One sentinel record goes to every partition of every ingested topic, and this returns once
    all of them are stored. A partition is consumed in offset order and its batches land in
    order, so a record read again (a replay after a kill or a rebalance) lands no later than the
    sentinel behind it: a count taken afterwards includes any duplicate. `query(sql, parameters)`
    reads ClickHouse; it may fail while a worker restarts (it is asked again)."""
    ws = fresh_workspace()
    sent = asyncio.run(_send_sentinels(topics, ws, bootstrap or os.environ["KAFKA_BOOTSTRAP_SERVERS"]))
    sql = "SELECT count() FROM {table:Identifier} WHERE workspace_id = {ws:UInt64}"
    deadline, stored = time.monotonic() + seconds, {}
    while True:
        for table in sent:
            try:
                stored[table] = query(sql, {"table": table, "ws": ws})[0][0]
            except Exception:  # noqa: BLE001 - the worker is restarting: ask again
                stored[table] = None
        if stored == sent:
            return
        assert time.monotonic() < deadline, f"sentinels sent {sent}, stored after {seconds} s: {stored}"
        time.sleep(0.3)


async def _send_sentinels(topics: Topics, ws: int, bootstrap: str) -> dict[str, int]:
    """One record per partition of each ingested topic, of workspace `ws`; table → records sent.
    Each has an event id of its own: a ReplacingMergeTree keeps one row per event id."""

    def sentinel_pixel() -> bytes:
        e = pixel(ws, visitor="sentinel")
        return e.encode(hint(e))

    records = {
        (topics.pixel, "events"): sentinel_pixel,
        (topics.usage, "usage_events"): lambda: orjson.dumps(usage(ws, "sentinel", 1)),
        (topics.dropped, "dropped_events"): lambda: Drop(ws, DropReason.INVALID, "json", 1, ch_time(now_ms())).encode(),
    }
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent, futures = {}, []
        for (topic, table), value in records.items():
            partitions = sorted(await producer.partitions_for(topic))
            for partition in partitions:
                futures.append(await producer.send(topic, value(), key=b"sentinel", partition=partition))
            sent[table] = len(partitions)
        for future in futures:
            await future
    finally:
        await producer.stop()
    return sent


class Worker:
    """A `python -m ingest` process of its own, to kill and restart."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.process, self.starts = env, log_dir, None, 0

    def start(self) -> "Worker":
        self.starts += 1
        self.log = self.log_dir / f"worker-{self.starts}.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest"], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + WAIT_SECONDS
        while "partitions assigned" not in self.log.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM; a worker that does not stop in 30 s is killed (and the test fails) so no stuck
        worker outlives the test, spinning on the machine."""
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def query(self, sql: str, parameters=None) -> list[tuple]:
        """Through the worker's HTTP interface only, waiting for it: open_reader's fallback would open
        the chdb directory here while a restarted worker is still opening it, and lock it out."""
        deadline = time.monotonic() + WAIT_SECONDS
        while (reader := worker_reader(self.env["CLICKHOUSE_URL"])) is None:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the worker's HTTP interface does not answer; its log:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        try:
            return reader.query(sql, parameters=parameters).result_rows
        finally:
            reader.close()


def pipeline_env(name: str, clickhouse_dir: Path, partitions: int = 3) -> dict[str, str]:
    """Topics, group and chdb directory of a test's own workers (the session worker holds its own);
    small, quick batches: many insert/commit windows for a kill to land in."""
    run = f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return {
        **os.environ,
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{run}.",
        "SLUICE_CONSUMER_GROUP": run,
        "SLUICE_KAFKA_PARTITIONS": str(partitions),
        "CLICKHOUSE_URL": f"chdb://{clickhouse_dir}",
        "SLUICE_CONSUMER_BATCH_ROWS": "500",
        "SLUICE_CONSUMER_BATCH_MS": "50",
        "SLUICE_CLICKHOUSE_HTTP": "127.0.0.1:0",
    }


@pytest.fixture(scope="module")
def own_env(tmp_path_factory):
    return pipeline_env("h2", tmp_path_factory.mktemp("clickhouse-own"))


@pytest.fixture
def worker(own_env, tmp_path):
    w = Worker(own_env, tmp_path)
    yield w
    if w.process is not None and w.process.poll() is None:
        w.stop()


def count_rows(query, workspace_id: int) -> tuple[int, int]:
    return query(
        "SELECT count(), uniqExact(event_id) FROM events WHERE workspace_id = {ws:UInt64}", {"ws": workspace_id}
    )[0]


def rolled_up(query, workspace_id: int) -> int:
    """Rows of the workspace's events pageviews_daily counted: each INSERT feeds it, and no merge
    takes a duplicate out of it, as one may of the raw ReplacingMergeTree before count() sees it."""
    sql = "SELECT sum(events) FROM pageviews_daily WHERE workspace_id = {ws:UInt64}"
    return query(sql, {"ws": workspace_id})[0][0]


# --- the session worker (conftest ingest_worker) ------------------------------------------------


def test_n_pixel_records_become_exactly_n_rows_with_their_fields(ingest_env, clickhouse_query):
    topics, ws = Topics.with_prefix(ingest_env["SLUICE_KAFKA_TOPIC_PREFIX"]), fresh_workspace()
    events = [pixel(ws, path=f"/p{i % 7}", visitor=f"v{i % 13}") for i in range(1000)]
    produce_pixels(topics.pixel, events)
    wait_for(lambda: tuple(count_rows(clickhouse_query, ws)), (1000, 1000))
    first = events[0]
    row = clickhouse_query(
        "SELECT toString(event_id), event, path, utm_source, properties, browser, is_bot, "
        "toString(time) FROM events WHERE event_id = {id:UUID}",
        {"id": first.event_id},
    )
    assert row == [(first.event_id, "pageview", first.path, "news", '{"a":1}', "Firefox", False, first.time)]
    settle(clickhouse_query, topics)  # nothing more arrives later
    assert count_rows(clickhouse_query, ws) == (1000, 1000)
    assert rolled_up(clickhouse_query, ws) == 1000


def test_poison_records_go_to_the_dead_letter_topic_and_later_records_still_arrive(ingest_env, clickhouse_query):
    topics, ws = Topics.with_prefix(ingest_env["SLUICE_KAFKA_TOPIC_PREFIX"]), fresh_workspace()
    poison = [
        b"not json at all",
        b'["an", "array"]',
        b'{"workspace_id": 5, "unknown_column": 1}',
        orjson.dumps({**orjson.loads(pixel(ws).encode()), "event_id": "not-a-uuid"}),
    ]
    before = [pixel(ws) for _ in range(50)]
    after = [pixel(ws) for _ in range(50)]
    produce(
        topics.pixel,
        [(b"k", e.encode()) for e in before] + [(b"k", p) for p in poison] + [(b"k", e.encode()) for e in after],
    )
    wait_for(lambda: tuple(count_rows(clickhouse_query, ws)), (100, 100))
    letters = read_topic(topics.dead_letter, lambda r: r.value in poison, len(poison))
    assert sorted(r.value for r in letters) == sorted(poison)
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["sluice-topic"] == topics.pixel.encode() and headers["sluice-reason"]
        assert int(headers["sluice-offset"]) >= 0


def read_topic(topic: str, wanted, count: int, seconds=WAIT_SECONDS) -> list:
    async def go():
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"], auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        found, deadline = [], time.monotonic() + seconds
        try:
            while len(found) < count and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [r for r in records if wanted(r)]
        finally:
            await consumer.stop()
        return found

    return asyncio.run(go())


def test_rollup_views_agree_with_the_raw_tables(ingest_env, clickhouse_query):
    topics, ws = Topics.with_prefix(ingest_env["SLUICE_KAFKA_TOPIC_PREFIX"]), fresh_workspace()
    hour = 3_600_000
    start = (now_ms() // hour - 30) * hour  # spans two days of hours
    events = [
        pixel(
            ws,
            event=random.choice(["pageview", "pageview", "click"]),
            path=f"/p{random.randrange(5)}",
            visitor=f"v{random.randrange(40)}",
            epoch_ms=start + random.randrange(30 * hour),
        )
        for _ in range(600)
    ]
    produce_pixels(topics.pixel, events)
    uses = [usage(ws, random.choice(["api_calls", "exports"]), random.randrange(1, 9)) for _ in range(60)]
    produce(topics.usage, [(workspace_key(ws), orjson.dumps(u)) for u in uses])
    drops = [
        Drop(ws, random.choice(["bot", "invalid"]), "json", random.randrange(1, 5), ch_time(now_ms()))
        for _ in range(20)
    ]
    produce(topics.dropped, [(workspace_key(ws), d.encode()) for d in drops])
    q, p = clickhouse_query, {"ws": ws}
    wait_for(lambda: q("SELECT count() FROM events WHERE workspace_id = {ws:UInt64}", p), [(600,)])
    wait_for(lambda: q("SELECT count() FROM usage_events WHERE workspace_id = {ws:UInt64}", p), [(60,)])
    wait_for(lambda: q("SELECT count() FROM dropped_events WHERE workspace_id = {ws:UInt64}", p), [(20,)])

    assert q(
        "SELECT toDate(time) d, countIf(event = 'pageview'), count(), uniq(visitor_id) FROM events "
        "WHERE workspace_id = {ws:UInt64} GROUP BY d ORDER BY d",
        p,
    ) == q(
        "SELECT day, sum(pageviews), sum(events), uniqMerge(visitors) FROM pageviews_daily "
        "WHERE workspace_id = {ws:UInt64} GROUP BY day ORDER BY day",
        p,
    )
    assert q(
        "SELECT toStartOfHour(time) h, countIf(event = 'pageview'), uniq(visitor_id) FROM events "
        "WHERE workspace_id = {ws:UInt64} GROUP BY h ORDER BY h",
        p,
    ) == q(
        "SELECT hour, sum(pageviews), uniqMerge(visitors) FROM pageviews_hourly "
        "WHERE workspace_id = {ws:UInt64} GROUP BY hour ORDER BY hour",
        p,
    )
    assert q(
        "SELECT toDate(time) d, path, count() FROM events WHERE workspace_id = {ws:UInt64} "
        "AND event = 'pageview' GROUP BY d, path ORDER BY d, path",
        p,
    ) == q(
        "SELECT day, path, sum(pageviews) FROM top_pages_daily WHERE workspace_id = {ws:UInt64} "
        "GROUP BY day, path ORDER BY day, path",
        p,
    )
    expected_usage = {}
    for u in uses:
        expected_usage[u["feature"]] = expected_usage.get(u["feature"], 0) + u["quantity"]
    assert (
        dict(q("SELECT feature, sum(quantity) FROM usage_daily WHERE workspace_id = {ws:UInt64} GROUP BY feature", p))
        == expected_usage
    )
    expected_drops = {}
    for d in drops:
        expected_drops[d.reason] = expected_drops.get(d.reason, 0) + d.count
    assert (
        dict(q("SELECT reason, sum(dropped) FROM dropped_daily WHERE workspace_id = {ws:UInt64} GROUP BY reason", p))
        == expected_drops
    )


# --- workers of this module's own: kills and replays --------------------------------------------


def test_worker_killed_mid_stream_and_restarted_leaves_exactly_n_rows(own_env, worker):
    topic, ws, n = Topics.with_prefix(own_env["SLUICE_KAFKA_TOPIC_PREFIX"]).pixel, fresh_workspace(), 20_000
    worker.start()
    producing = subprocess.Popen([sys.executable, "-c", PRODUCE_SCRIPT, topic, str(ws), str(n)], cwd=ROOT, env=own_env)
    deadline = time.monotonic() + WAIT_SECONDS
    while count_rows(worker.query, ws)[0] < 2_000:  # mid-stream: some batches in, many to come
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.kill()
    assert producing.wait(WAIT_SECONDS) == 0
    worker.start()
    wait_for(lambda: tuple(count_rows(worker.query, ws)), (n, n))
    settle(worker.query, Topics.with_prefix(own_env["SLUICE_KAFKA_TOPIC_PREFIX"]))
    assert count_rows(worker.query, ws) == (n, n)
    # A kill inside an INSERT can leave a batch out of the views it feeds (the retry skips its rows,
    # which are in): the rollup may count fewer, never more.
    assert rolled_up(worker.query, ws) <= n


PRODUCE_SCRIPT = """
import sys
from tests.integration.ingest.test_consumer import pixel, produce_pixels
topic, ws, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for start in range(0, n, 1000):
    produce_pixels(topic, [pixel(ws, visitor=str(i)) for i in range(start, start + 1000)])
"""


def test_replaying_committed_offsets_from_zero_changes_no_count(own_env, worker):
    topics, ws = Topics.with_prefix(own_env["SLUICE_KAFKA_TOPIC_PREFIX"]), fresh_workspace()
    worker.start()
    produce_pixels(topics.pixel, [pixel(ws) for _ in range(300)])
    produce(topics.usage, [(workspace_key(ws), orjson.dumps(usage(ws, "api_calls", 1))) for _ in range(30)])
    wait_for(lambda: tuple(count_rows(worker.query, ws)), (300, 300))
    assert worker.stop() == 0
    reset_group_offsets(own_env["SLUICE_CONSUMER_GROUP"], topics, int(own_env["SLUICE_KAFKA_PARTITIONS"]))
    worker.start()
    produce_pixels(topics.pixel, [pixel(ws)])  # proves the restarted worker consumes
    wait_for(lambda: tuple(count_rows(worker.query, ws)), (301, 301))
    settle(worker.query, topics)
    assert count_rows(worker.query, ws) == (301, 301) and rolled_up(worker.query, ws) == 301
    p = {"ws": ws}
    assert worker.query("SELECT count() FROM usage_events WHERE workspace_id = {ws:UInt64}", p) == [(30,)]
    assert worker.query("SELECT sum(records) FROM usage_daily WHERE workspace_id = {ws:UInt64}", p) == [(30,)]


def reset_group_offsets(group: str, topics: Topics, partitions: int) -> None:
    """Commit offset 0 for every partition, as `kafka-consumer-groups --reset-offsets --to-earliest` would."""

    async def go():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"], group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in topics.ingested() for p in range(partitions)]
            consumer.assign(tps)
            await consumer.commit({tp: 0 for tp in tps})
            assert all([await consumer.committed(tp) == 0 for tp in tps])
        finally:
            await consumer.stop()

    asyncio.run(go())


# --- batch bookkeeping (pure) ---------------------------------------------------------------------


def records(topic: str, partition: int, offsets) -> list[ConsumedRecord]:
    return [ConsumedRecord(topic, partition, o, None, b"{}") for o in offsets]


class FakeClock:
    """Stands for `time` in ingest.worker.batch: the batch's age moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    import ingest.worker.batch

    fake = FakeClock()
    monkeypatch.setattr(ingest.worker.batch, "time", fake)
    return fake


def test_batch_is_due_by_size_or_by_age_whichever_first(clock):
    batch = InsertBatch(max_rows=3, max_ms=50)
    assert not batch.due()
    batch.add({TopicPartition("t", 0): records("t", 0, [0, 1])})
    clock.now += 0.049
    assert not batch.due()
    clock.now += 0.001
    assert batch.due()
    batch.take()
    batch.add({TopicPartition("t", 0): records("t", 0, [2, 3, 4])})
    assert batch.due()


def test_batch_commits_one_past_the_last_offset_even_when_all_were_already_stored():
    batch = InsertBatch(10, 1000)
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    batch.add({a: records("t", 0, [5, 6, 7]), b: records("t", 1, [0, 1])})
    assert batch.skip_stored({("t", 0): 6, ("t", 1): 9}) == 4
    assert [r.offset for r in batch.by_topic()["t"]] == [7]
    assert batch.next_offsets() == {a: 8, b: 2}
    assert batch.rows == 1


def test_batch_forgets_partitions_no_longer_assigned():
    batch = InsertBatch(10, 1000)
    a, b = TopicPartition("t", 0), TopicPartition("u", 0)
    batch.add({a: records("t", 0, [0]), b: records("u", 0, [0, 1])})
    batch.keep({a})
    assert batch.next_offsets() == {a: 1} and batch.rows == 1 and list(batch.by_topic()) == ["t"]


def test_a_batch_whose_records_were_all_stored_is_still_due_by_age_and_commits_past_them(clock):
    # A worker resuming after an offset reset skips every replayed record; the batch must still
    # come due, or the loop polls Kafka with a zero timeout forever and never yields (seen: the
    # worker froze, answering neither queries nor SIGTERM).
    batch, a = InsertBatch(max_rows=10, max_ms=30), TopicPartition("t", 0)
    batch.add({a: records("t", 0, [0, 1, 2])})
    assert batch.skip_stored({("t", 0): 5}) == 3 and batch.rows == 0
    assert not batch.due() and batch.seconds_left() == pytest.approx(0.03)
    clock.now += 0.03
    assert batch.due() and batch.seconds_left() == 0
    assert batch.take().next_offsets() == {a: 3} and not batch.due() and batch.seconds_left() > 0


def test_records_fetched_again_after_a_seek_back_are_not_taken_twice():
    # After a Kafka restart the rebalance sought the partition back to ClickHouse's stored offset
    # while the open batch still held what had been fetched: the batch held 1,675 records twice.
    batch, a = InsertBatch(max_rows=10_000, max_ms=1000), TopicPartition("t", 0)
    assert batch.add({a: records("t", 0, range(325, 400))}) == 0
    assert batch.add({a: records("t", 0, range(325, 410))}) == 75
    assert [r.offset for r in batch.by_topic()["t"]] == list(range(325, 410))
    assert batch.rows == 85 and batch.next_offsets() == {a: 410}
    assert batch.add({a: records("t", 0, range(325, 400))}) == 75 and batch.rows == 85


@given(st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(0, 40), st.integers(0, 15)), max_size=25))
def test_a_batch_holds_each_offset_once_in_order_whatever_is_fetched(fetches):
    batch, seen = InsertBatch(max_rows=10_000, max_ms=1000), {0: set(), 1: set()}
    for p, start, n in fetches:
        batch.add({TopicPartition("t", p): records("t", p, range(start, start + n))})
        seen[p].update(range(start, start + n))
    for p in (0, 1):
        offsets = [r.offset for r in batch.records.get(TopicPartition("t", p), [])]
        assert offsets == sorted(set(offsets))  # strictly increasing: nothing twice
        assert set(offsets) <= seen[p]
    assert batch.rows == sum(len(rs) for rs in batch.records.values())


def test_a_batch_that_lost_all_its_partitions_waits_the_full_interval_again(clock):
    batch, a = InsertBatch(max_rows=10, max_ms=30), TopicPartition("t", 0)
    batch.add({a: records("t", 0, [0])})
    clock.now += 0.04
    assert batch.due()
    batch.keep(set())
    assert batch.next_offsets() == {} and not batch.due() and batch.seconds_left() == pytest.approx(0.03)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([0, 1]), st.integers(0, 12)),
        st.tuples(st.just("skip"), st.sampled_from([0, 1]), st.integers(-1, 40)),
        st.tuples(st.just("keep"), st.sampled_from([0, 1]), st.just(0)),
        st.tuples(st.just("take"), st.just(0), st.just(0)),
        st.tuples(st.just("age"), st.just(0), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=500)
@given(OPS)
def test_a_batch_is_always_either_due_or_worth_waiting_for(ops):
    """The consumer's loop waits seconds_left() in getmany unless the batch is due: never both zero."""
    batch, next_offset = InsertBatch(max_rows=8, max_ms=1000), {0: 0, 1: 0}
    for op, p, n in ops:
        tp = TopicPartition("t", p)
        if op == "add":
            batch.add({tp: records("t", p, range(next_offset[p], next_offset[p] + n))})
            next_offset[p] += n
        elif op == "skip":
            batch.skip_stored({("t", p): n})
        elif op == "keep":
            batch.keep({TopicPartition("t", 1 - p)})
        elif op == "take":
            batch.take()
        elif batch.started is not None:
            batch.started -= 2  # its first record is now older than max_ms
        assert batch.due() or batch.seconds_left() > 0
        assert batch.rows == sum(len(rs) for rs in batch.records.values()) >= 0


@given(
    st.dictionaries(st.sampled_from(["t", "u"]), st.lists(st.integers(0, 3), max_size=4), max_size=2),
    st.dictionaries(st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 3)), st.integers(-1, 30)),
)
def test_batch_skip_stored_keeps_exactly_the_records_above_the_stored_offset(parts, stored):
    batch, offset = InsertBatch(10_000, 1000), 0
    fetched = {}
    for topic, partitions in parts.items():
        for p in set(partitions):
            fetched[TopicPartition(topic, p)] = records(topic, p, range(offset, offset + 10))
    batch.add(fetched)
    ends = batch.next_offsets()
    batch.skip_stored(stored)
    kept = [(r.topic, r.partition, r.offset) for rs in batch.by_topic().values() for r in rs]
    assert kept == sorted(
        (tp.topic, tp.partition, r.offset)
        for tp, rs in fetched.items()
        for r in rs
        if r.offset > stored.get((tp.topic, tp.partition), -1)
    )
    assert batch.rows == len(kept) and batch.next_offsets() == ends


def test_batch_encodes_each_partition_once_and_again_after_its_records_change():
    calls = []

    def encode(tp, rs):
        calls.append(tp.partition)
        return b"".join(b"%d\n" % r.offset for r in rs)

    batch = InsertBatch(100, 1000)
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    batch.add({a: records("t", 0, [0, 1]), b: records("t", 1, [5])})
    batch.encode(encode)
    assert batch.encoded_by_topic(encode) == {"t": [b"0\n1\n", b"5\n"]} and sorted(calls) == [0, 1]
    batch.add({a: records("t", 0, [2])})
    batch.skip_stored({("t", 1): 5})
    assert batch.encoded_by_topic(encode) == {"t": [b"0\n1\n2\n"]} and sorted(calls) == [0, 0, 1]
    assert batch.take().encoded_by_topic(encode) == {"t": [b"0\n1\n2\n"]} and batch.encoded == {}
