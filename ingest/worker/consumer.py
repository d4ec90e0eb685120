"""Ingest stage "consume": Kafka → ClickHouse, getmany → insert → commit, exactly once in effect.

Requirements: every record reaches ClickHouse once, across crashes and rebalances; a bad record
never stops the pipeline; the consumer keeps up with the API (≥ 200k rows/s through chdb).

How a record is counted once:
- A batch (batch_rows records or batch_ms old, whichever first) is inserted with ONE INSERT per
  table, and Kafka offsets are committed only after every insert succeeded (at least once).
- Each row carries its Kafka coordinates (_topic, _partition, _offset) in that same INSERT, and
  the view ingest_offsets keeps their maximum per partition. On assignment the consumer seeks each
  partition to max(committed offset, stored maximum + 1), so a crash between insert and commit
  replays nothing: the stored offsets are written atomically with the rows, which a separate
  commit can never be. A ClickHouse deduplication token would do the same for an identical
  batch, but a batch after a restart is not cut at the same offsets, so its token differs.
- A retry after a failure (ClickHouse or Kafka away) first drops what the stored offsets show is
  already in, so a half-done batch is not doubled either.
- A batch takes each partition's offsets only past its own end (ingest/worker/batch.py), so records a
  rebalance's seek delivers again while the batch still holds them are not inserted twice.
- Second net: events and usage_events are ReplacingMergeTree ordered by their event id, so a record
  the producer sent twice (its rare crash window) collapses under FINAL. Rollups count it twice;
  they agree with the raw table whenever no such duplicate was produced.

Speed: record values are spliced into JSONEachRow with their coordinates (writer.source_rows) and
never decoded in Python; ClickHouse parses them. The splicing runs on the event loop while the
previous batch is inserted, so the one ClickHouse thread does nothing but INSERTs (chdb releases
the GIL); the loop yields after each getmany, which otherwise returns buffered records without
ever yielding, so that a batch's INSERT starts and its commit goes out as soon as they can.
A refused batch is sorted out by ingest/worker/dead_letter.py.
When tracing is on, each INSERT has a span linked to the traces its records carry in their
`traceparent` headers (storage/telemetry/tracing.py).
"""

import asyncio
import gc
import logging
import math
import os
import signal
import time

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from ingest.events import Topics
from ingest.worker import metrics
from ingest.worker.batch import InsertBatch
from ingest.worker.dead_letter import DeadLetters, insert_sorting_out
from ingest.worker.lag import LagReporter
from ingest.worker.sessions import HORIZON_MS, Sessions
from storage.clickhouse import sessions as stored_sessions
from storage.clickhouse import writer
from storage.clickhouse.writer import Rejected
from storage.config import Config
from storage.errors import Unavailable
from storage.telemetry import tracing

log = logging.getLogger(__name__)

# Longest wait in getmany: how quickly a stop request or a due batch is noticed.
POLL_SECONDS = 0.2
# A partition fetch this large holds ~14k pixel records (~600 bytes each): enough for a
# 50k-row batch from a few partitions per round trip; memory stays partitions × this.
MAX_PARTITION_FETCH_BYTES = 8 << 20
# Retry backoff while ClickHouse or Kafka is away: quick after a blip, then every 10 s.
RETRY_MIN, RETRY_MAX = 0.5, 10.0
ASSIGNED = "partitions assigned"  # the log line tests and operators wait for
# A batch holds 100k+ ConsumerRecords (tracked by the cyclic GC) until it is inserted. With the
# default thresholds (700, 10, 10) a 500k-row drain ran ~700 collections, 5 of them full, for
# 0.35 s of the loop's time; at 100,000 it ran 5 young ones, 0.14 s. Cycles are still collected.
GC_THRESHOLDS = (100_000, 10, 10)


def tables(topics: Topics) -> dict[str, str]:
    """Kafka topic → the ClickHouse table its records are rows of."""
    return {topics.pixel: "events", topics.usage: "usage_events", topics.dropped: "dropped_events"}


class Consumer:
    def __init__(self, config: Config, thread: writer.ClickHouseThread, client):
        shared, worker = config.shared, config.worker
        topics = Topics.with_prefix(shared.kafka_topic_prefix)
        self.tables = tables(topics)
        metrics.declare(self.tables)
        self._topic_json = {topic: orjson.dumps(topic) for topic in self.tables}
        self.thread, self.client = thread, client
        self.batch = InsertBatch(worker.batch_rows, worker.batch_ms)
        self.kafka = AIOKafkaConsumer(
            bootstrap_servers=shared.kafka_bootstrap_servers,
            group_id=worker.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        )
        self.dead_letters = DeadLetters(shared.kafka_bootstrap_servers, topics.dead_letter)
        self.committed: dict = {}  # TopicPartition → next offset to read, as last committed
        self.ready: set = set()  # assigned partitions whose records may be taken (resume_from_stored)
        # (topic, partition) → highest offset known to be in ClickHouse. The seek on assignment
        # should keep those records away, but a fetch aiokafka started from the committed offset
        # can still deliver them (seen in tests, timing-dependent): they are dropped here too.
        self.floor: dict[tuple[str, int], int] = {}
        self.lag = LagReporter()
        self.sessions = Sessions(topics.pixel)
        self.assigned = asyncio.Event()
        self.counts = {"rows": 0, "batches": 0, "skipped_replayed": 0}
        self.kill_after_batches = worker.fault_kill_after_batches
        self._lock = asyncio.Lock()  # one flush at a time: the loop's or the rebalance's
        self._inflight: asyncio.Task | None = None  # the batch being inserted and committed

    async def start(self) -> None:
        gc.set_threshold(*GC_THRESHOLDS)
        await self.dead_letters.start()
        self.kafka.subscribe(list(self.tables), listener=_Rebalance(self))
        await self.kafka.start()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set, then insert and commit what was taken."""
        while not stopping.is_set():
            # Rounded up: a zero timeout makes getmany return without yielding to the loop.
            timeout_ms = math.ceil(min(self.batch.seconds_left(), POLL_SECONDS) * 1000)
            fetched = await self.kafka.getmany(timeout_ms=timeout_ms, max_records=self.batch.room())
            if fetched and not self.ready.issuperset(fetched):  # resume_from_stored is not done with them
                fetched = {tp: records for tp, records in fetched.items() if tp in self.ready}
            self.batch.add(fetched, self.floor, self.sessions.rewrite)
            self.batch.skip_stored(self.floor)
            self._count_skipped(self.batch)
            if self.batch.due():
                await self.flush()
            elif fetched:
                # getmany returns buffered records without yielding: let the batch in flight commit
                await asyncio.sleep(0)
            self.lag.update(self.kafka, self.committed, self.stats())
        await self.flush(wait=True)

    async def stop(self) -> None:
        try:
            await self.kafka.stop()
        finally:
            await self.dead_letters.stop()

    def stats(self) -> dict:
        """For metrics: rows and batches inserted, dead letters, lag per topic."""
        return {
            **self.counts,
            **self.sessions.counts,
            "dead_letters": self.dead_letters.sent,
            "lag": dict(self.lag.last),
        }

    async def flush(self, wait: bool = False) -> None:
        """Start inserting the open batch once the previous one is in and committed.

        One batch is in flight at a time, so offsets are committed in order; while it is inserted
        (chdb releases the GIL) the loop fetches the next one. `wait`: return once it is committed.
        """
        async with self._lock:
            self.batch.keep(self.kafka.assignment())
            self.batch.encode(self._encode)  # on the loop, while the previous batch is inserted
            await self._settle()
            self.batch.keep(self.kafka.assignment())
            # The batch that just landed raised the floor; what was fetched again meanwhile goes.
            self.batch.skip_stored(self.floor)
            self._count_skipped(self.batch)
            if self.batch.ends:
                self._inflight = asyncio.create_task(self._land(self.batch.take()))
                await asyncio.sleep(0)  # let it hand its INSERT to the ClickHouse thread now
            if wait:
                await self._settle()

    async def _settle(self) -> None:
        if self._inflight is not None:
            task, self._inflight = self._inflight, None
            await task

    async def _land(self, batch: InsertBatch) -> None:
        started = time.perf_counter()
        rows = await self._insert(batch)
        if self.counts["batches"] + 1 == self.kill_after_batches:
            # The dangerous moment, on purpose: rows and views in, offsets not committed.
            log.warning("SLUICE_FAULT_KILL_AFTER_BATCHES=%d: killing this worker now", self.kill_after_batches)
            os.kill(os.getpid(), signal.SIGKILL)
        offsets = batch.next_offsets()
        for tp, next_offset in offsets.items():
            self.floor[(tp.topic, tp.partition)] = max(self.floor.get((tp.topic, tp.partition), -1), next_offset - 1)
        await self._commit(offsets)
        self.counts["rows"] += rows
        self.counts["batches"] += 1
        log.debug("batch: %d rows in %.3f s", rows, time.perf_counter() - started)

    async def _insert(self, batch: InsertBatch) -> int:
        """Insert the batch, retrying while ClickHouse or Kafka is away; never twice the same row."""
        delay, retry = RETRY_MIN, False
        while True:
            try:
                if retry:
                    batch.keep(self.kafka.assignment())
                    batch.skip_stored(await self._stored())
                    self._count_skipped(batch)
                return await self._insert_once(batch)
            except (Unavailable, KafkaError) as exc:
                log.warning("insert failed, retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay, retry = min(delay * 2, RETRY_MAX), True

    def _count_skipped(self, batch: InsertBatch) -> None:
        skipped = batch.drain_skipped()
        if skipped:
            self.counts["skipped_replayed"] += sum(skipped.values())
            metrics.skipped(skipped)

    def _encode(self, tp, records: list) -> bytearray:
        return writer.source_rows(records, self._topic_json[tp.topic])

    async def _insert_once(self, batch: InsertBatch) -> int:
        rows = 0
        blocks = batch.encoded_by_topic(self._encode)
        for topic, records in batch.by_topic().items():
            if not records:
                continue

            async def insert(part, table=self.tables[topic], topic=self._topic_json[topic]):
                return await self.thread.call(_write, self.client, table, writer.source_rows(part, topic), len(part))

            with tracing.insert_span(self.tables[topic], records):
                try:
                    rows += await self.thread.call(_write, self.client, self.tables[topic], blocks[topic], len(records))
                except Rejected as exc:
                    log.warning(
                        "%s refused a batch of %d (%s); sorting out the bad records",
                        self.tables[topic],
                        len(records),
                        exc,
                    )
                    rows += await insert_sorting_out(insert, records, self.dead_letters)
        return rows

    async def _commit(self, offsets: dict) -> None:
        self.committed.update(offsets)
        try:
            await self.kafka.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # Harmless: the rows carry their offsets, and the next owner of these partitions
            # seeks past them (resume_from_stored).
            log.warning("offset commit failed (%s); ClickHouse's stored offsets cover it", exc)

    async def _stored(self) -> dict[tuple[str, int], int]:
        return await self.thread.call(writer.stored_offsets, self.client, dict(self.tables))

    async def resume_from_stored(self, assigned) -> None:
        """Seek each newly assigned partition past what ClickHouse already holds, once its session
        state is rebuilt. Until then its records are not taken: aiokafka fetches an assigned
        partition from its committed offset while this runs, and a record taken before the state is
        rebuilt (or before the floor is known) would get its session from nothing, or be stored twice."""
        self.ready.difference_update(assigned)
        stored = await self._until_answered(self._stored)
        for tp in assigned:
            if (tp.topic, tp.partition) in stored:
                key = (tp.topic, tp.partition)
                self.floor[key] = max(self.floor.get(key, -1), stored[key])
            committed = await self.kafka.committed(tp)
            high = stored.get((tp.topic, tp.partition))
            if high is not None and (committed is None or committed <= high):
                committed = high + 1
            if committed is not None:
                self.committed[tp] = committed
        pixel = sorted(tp.partition for tp in assigned if tp.topic == self.sessions.topic)
        if pixel:
            await self._until_answered(lambda: self._restore_sessions(pixel))
        fresh = [tp for tp in assigned if tp not in self.committed]
        if fresh:  # read from the start (auto_offset_reset): lag counts from there
            self.committed.update(await self.kafka.beginning_offsets(fresh))
        for tp in assigned:  # what was fetched meanwhile was not taken: fetch it again
            self.kafka.seek(tp, self.committed[tp])
        self.ready.update(assigned)
        log.info(
            "%s: %d (%s)",
            ASSIGNED,
            len(assigned),
            ", ".join(f"{tp.topic}[{tp.partition}]@{self.committed[tp]}" for tp in sorted(assigned)) or "none",
        )
        self.assigned.set()

    async def _restore_sessions(self, partitions: list[int]) -> None:
        found = await self.thread.call(stored_sessions.open_sessions, self.client, partitions, HORIZON_MS)
        for partition, (watermark, sessions) in found.items():
            self.sessions.restore(partition, watermark, sessions)

    async def _until_answered(self, call):
        delay = RETRY_MIN
        while True:
            try:
                return await call()
            except Unavailable as exc:
                log.warning("cannot read stored offsets, retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)


def _write(client, table: str, rows: bytes | list[bytes | bytearray], records: int) -> int:
    """On the ClickHouse thread: insert a JSONEachRow block (or its parts, one per partition) of `records` rows."""
    started = time.perf_counter()
    written = writer.insert_rows(client, table, rows)
    metrics.inserted(table, records, time.perf_counter() - started)
    return written


class _Rebalance(ConsumerRebalanceListener):
    """Before partitions leave: insert and commit what was taken. When they arrive: skip what is in."""

    def __init__(self, consumer: Consumer):
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked) -> None:
        if revoked:
            await self.consumer.flush(wait=True)
            self.consumer.ready.difference_update(revoked)
            sessions = self.consumer.sessions
            sessions.forget(tp.partition for tp in revoked if tp.topic == sessions.topic)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.consumer.resume_from_stored(assigned)
