"""Ingest stage "hand-off": a 2xx is sent only once an event is acknowledged by Kafka or spooled.

Requirements, in order: an event the API answered 2xx for is never lost; the API serves while
Kafka is away (events wait in the on-disk spool, ingest/handoff/spool.py, and are replayed in order when
Kafka returns); concurrent requests share one producer batch instead of queuing behind each other.

One AIOKafkaProducer per process (acks=all, idempotent, lz4), fed through per-partition batch
builders (ingest/handoff/kafka_batches.py). A send waits for the acknowledgement up to ack_deadline_ms,
then spools whatever is unacknowledged. Once anything is spooled, later
sends go to the spool too until the replay has caught up, which keeps each key's order.
With `metrics`, each send counts its records by destination and observes its acknowledgement's
time; the in-flight and spool gauges are read from stats() (app/http/metrics.py publishes them).
When tracing is on, the records of a traced request carry its `traceparent` as a Kafka header
(storage/telemetry/tracing.py); those few go through aiokafka's own send(), which takes headers,
and a record that goes through the spool loses it (the spool keeps keys and values only).
"""

import asyncio
import contextlib
import functools
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ingest.handoff import spool as spools
from ingest.handoff.kafka_batches import LATE, Lanes, use_fast_lz4
from ingest.handoff.sink import Durability, Sink
from ingest.handoff.spool import Chunk, Position, Spool, SpoolFull
from ingest.topics import ensure_topics
from storage.compat import aiokafka_internals
from storage.telemetry import tracing
from storage.telemetry.metrics import ApiMetrics

__all__ = ["DurableProducer", "SpoolFull"]

log = logging.getLogger(__name__)

# stop() waits this long for Kafka to acknowledge what is in flight: SIGTERM usually comes with
# 30 s of grace (Kubernetes, Docker), and the spool needs well under a second after it.
FLUSH_TIMEOUT = 10.0
# Reconnection backoff: a quick retry after a blip, then one attempt every 5 s.
RETRY_MIN, RETRY_MAX = 0.2, 5.0
# A checkpoint per replayed chunk: a crash during replay re-sends at most this many records.
REPLAY_RECORDS, REPLAY_BYTES = 1000, 4 << 20
# The replay loop looks for work this often even when no append woke it.
REPLAY_POLL = 1.0


class DurableProducer(Sink):
    """The API's Sink (ingest/handoff/sink.py): Kafka when it acknowledges in time, else the spool."""

    def __init__(
        self,
        bootstrap_servers: str,
        spool_dir: str,
        *,
        linger_ms: int = 5,
        batch_bytes: int = 262_144,
        ack_deadline_ms: int = 1500,
        spool_max_bytes: int = 1 << 30,
        partitions: int = 6,
        topics: tuple[str, ...] = (),
        metrics: ApiMetrics | None = None,
    ):
        self.bootstrap_servers, self.spool_dir = bootstrap_servers, spool_dir
        self.metrics = metrics
        self.linger_ms, self.batch_bytes = linger_ms, batch_bytes
        self.ack_deadline = ack_deadline_ms / 1000
        self.spool_max_bytes, self.partitions, self.topics = spool_max_bytes, partitions, tuple(topics)
        self._producer: AIOKafkaProducer | None = None  # set while connected
        self._lanes: Lanes | None = None  # the connected producer's batch builders
        self._own: Spool | None = None
        self._adopted: list[Spool] = []
        self._spooling = False  # new sends go to the spool until the replay catches up
        self._inflight: dict[Position, asyncio.Future] = {}  # spooled but maybe acknowledged later
        self._connected = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._soon: set[asyncio.Task] = set()
        self._active = 0  # send calls under way
        self._inflight_records = 0  # records of those calls, not yet acknowledged or spooled
        self._closing = False
        self._replay_until: float | None = None  # set by stop(): last chunk it may start
        self._counts = {"sent_kafka": 0, "sent_spool": 0, "replayed": 0, "spool_full_refusals": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Never fails because Kafka is away: the API serves and spools meanwhile."""
        own = self._own = await asyncio.to_thread(spools.claim, self.spool_dir, self.spool_max_bytes)
        self._adopted = await asyncio.to_thread(spools.adopt_orphans, self.spool_dir, self.spool_max_bytes)
        if any(spool.pending for spool in self._adopted):
            self._enter_spooling(f"{sum(s.pending for s in self._adopted)} records left by a previous process")
        self._runner = asyncio.get_running_loop().create_task(self._run(own))
        # A short wait so that, normally, the first requests go straight to Kafka.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.ack_deadline):
                await self._connected.wait()

    async def stop(self) -> None:
        """Flush what is in flight (to Kafka, else to the spool), then close."""
        if self._own is None or self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        # Half the time for a last replay (what the spool holds reaches Kafka now, not at the next
        # start), stopping between chunks so that no chunk is sent twice.
        self._replay_until = loop.time() + FLUSH_TIMEOUT / 2
        while (self._active or self._soon) and loop.time() < deadline:  # each ends within its ack deadline
            await asyncio.sleep(0.01)
        self._wakeup.set()
        await self._stop_runner(max(0.0, deadline - loop.time()))
        await self._close_producer(max(0.0, deadline - loop.time()))
        for spool in (*self._adopted, self._own):
            await spool.close(remove=spool.idle())
        log.info("producer stopped: %s", self.stats())

    async def _stop_runner(self, timeout: float) -> None:
        if self._runner is None:
            return
        if self._producer is not None:  # connected: let the replay finish the chunk in hand
            await asyncio.wait({self._runner}, timeout=timeout)
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._runner

    # -- sending -----------------------------------------------------------------------------

    async def send(self, topic: str, key: bytes, value: bytes) -> Durability:
        """Returns where the record is durable once it is; raises SpoolFull."""
        return await self.send_many(topic, [(key, value)])

    async def send_many(self, topic: str, records: list[tuple[bytes, bytes]]) -> Durability:
        """All records durable (in one spool write when spooled); order kept per key."""
        own = self._own
        if own is None:
            raise RuntimeError("DurableProducer.start() was not called")
        if not records:
            return Durability.KAFKA
        self._active += 1
        self._inflight_records += len(records)
        try:
            producer = self._producer
            if producer is None or self._spooling:
                return await self._to_spool(own, topic, records, [], "Kafka not connected")
            handed = time.perf_counter()
            headers = tracing.record_headers()
            if headers:
                futures, why = await self._to_kafka_one_by_one(producer, topic, records, headers)
            else:
                futures, why = await self._to_kafka(producer, topic, records)
            if why is None:
                self._counts["sent_kafka"] += len(records)
                if self.metrics is not None:
                    self.metrics.acknowledged(time.perf_counter() - handed)
                    self.metrics.produced("kafka", len(records))
                return Durability.KAFKA
            return await self._to_spool(own, topic, records, futures, why)
        finally:
            self._active -= 1
            self._inflight_records -= len(records)

    async def _to_kafka(self, producer, topic, records) -> tuple[list[asyncio.Future], str | None]:
        """Append to the partitions' open batches and wait for their acks up to the deadline."""
        lanes = self._lanes
        if lanes is None or not lanes.knows(topic):
            return await self._to_kafka_one_by_one(producer, topic, records)
        try:
            batches = [lanes.append(topic, key, value) for key, value in records]
        except KafkaError as exc:  # closing: nothing of this call was appended after the failure
            return [], repr(exc)
        acked = [batch.acked for batch in batches]
        try:
            for decided in {batch.decided for batch in batches}:  # mostly one batch per request
                if await decided == LATE:
                    return acked, f"no acknowledgement within {self.ack_deadline:g} s"
        except KafkaError as exc:
            return acked, repr(exc)
        return acked, None

    async def _to_kafka_one_by_one(
        self, producer, topic, records, headers=None
    ) -> tuple[list[asyncio.Future], str | None]:
        """aiokafka's own send(): learns the topic's partitions the first time, takes headers."""
        futures = []
        try:
            async with asyncio.timeout(self.ack_deadline):
                for key, value in records:
                    futures.append(await producer.send(topic, value, key=key, headers=headers))
                await asyncio.wait(futures)
        except MessageSizeTooLargeError:
            raise  # would never go through: the caller's validation let too big an event in
        except TimeoutError:
            return futures, f"no acknowledgement within {self.ack_deadline:g} s"
        except KafkaError as exc:
            return futures, repr(exc)
        failed = next((exc for exc in map(_failure, futures) if exc is not None), None)
        return futures, None if failed is None else repr(failed)

    async def _to_spool(self, own: Spool, topic, records, futures, why: str) -> Durability:
        """Spool what Kafka has not acknowledged; an ack arriving later cancels the replay."""
        todo = []
        for i, (key, value) in enumerate(records):
            future = futures[i] if i < len(futures) else None
            if not _acked(future):
                todo.append((key, value, future))
        if not todo:  # every ack came in just past the deadline
            self._counts["sent_kafka"] += len(records)
            self._observe(len(records), 0)
            return Durability.KAFKA
        self._enter_spooling(why)
        try:
            positions = await own.append_many(topic, [(key, value) for key, value, _ in todo])
        except SpoolFull:
            self._counts["spool_full_refusals"] += 1
            if self.metrics is not None:
                self.metrics.spool_full.inc()
            for _key, _value, future in todo:
                if future is not None:
                    future.add_done_callback(_retrieve)
            raise
        for position, (_key, _value, future) in zip(positions, todo, strict=True):
            self._track(own, position, future)
        self._counts["sent_kafka"] += len(records) - len(todo)
        self._counts["sent_spool"] += len(todo)
        self._observe(len(records) - len(todo), len(todo))
        self._wakeup.set()
        return Durability.SPOOL

    def _observe(self, kafka: int, spool: int) -> None:
        if self.metrics is not None:
            if kafka:
                self.metrics.produced("kafka", kafka)
            if spool:
                self.metrics.produced("spool", spool)

    def _track(self, own: Spool, position: Position, future: asyncio.Future | None) -> None:
        if future is None:
            return
        if not future.done():
            self._inflight[position] = future
            future.add_done_callback(functools.partial(self._settled, own, position))
        elif _acked(future):
            own.mark_done(position)

    def _settled(self, own: Spool, position: Position, future: asyncio.Future) -> None:
        self._inflight.pop(position, None)
        if _acked(future):
            own.mark_done(position)

    def _enter_spooling(self, why: str) -> None:
        if not self._spooling:
            self._spooling = True
            log.warning("Kafka unavailable (%s): events go to the spool in %s until it is back", why, self.spool_dir)

    def send_soon(self, topic: str, key: bytes, value: bytes) -> None:
        """Best effort, not awaited (drop counters): never raises."""
        try:
            task = asyncio.get_running_loop().create_task(self._quiet(topic, key, value))
        except RuntimeError:  # no running loop: nothing to send it with
            return
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    async def _quiet(self, topic, key, value) -> None:
        try:
            await self.send(topic, key, value)
        except Exception as exc:  # noqa: BLE001 - best effort by contract
            log.debug("send_soon to %s dropped: %r", topic, exc)

    # -- connection and replay ---------------------------------------------------------------

    async def _run(self, own: Spool) -> None:
        delay = RETRY_MIN
        while not self._closing:
            try:
                producer = self._producer = await self._connect()
                self._lanes = Lanes(producer, self.ack_deadline)
                self._connected.set()
                delay = RETRY_MIN
                await self._replay_forever(producer, own)
            except Exception as exc:  # noqa: BLE001 - any failure: spool meanwhile, reconnect
                self._enter_spooling(repr(exc))
                await self._close_producer(0)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _connect(self) -> AIOKafkaProducer:
        use_fast_lz4()
        if self.topics:
            await ensure_topics(self.bootstrap_servers, self.topics, self.partitions)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
            max_batch_size=self.batch_bytes,
            compression_type="lz4",
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _close_producer(self, timeout: float) -> None:
        """Flush for up to timeout; what is still unacknowledged fails (it is in the spool)."""
        producer, self._producer = self._producer, None
        lanes, self._lanes = self._lanes, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(timeout):
                while lanes is not None and not lanes.idle():  # batches still to hand to aiokafka
                    await asyncio.sleep(0.005)
                await producer.flush()
        except (TimeoutError, KafkaError):
            # Idempotent batches are retried forever; failing them is the only way to close now.
            error = KafkaError("producer closed before Kafka acknowledged")
            if lanes is not None:
                lanes.fail_all(error)
            aiokafka_internals.fail_pending(producer, error)
        with contextlib.suppress(Exception):
            await producer.stop()

    async def _replay_forever(self, producer: AIOKafkaProducer, own: Spool) -> None:
        while True:
            progressed = await self._replay_all(producer, own)
            idle = all(spool.idle() for spool in (own, *self._adopted))
            if self._spooling and idle:
                self._spooling = False
                log.info("Kafka is back: spool replayed (%d records so far)", self._counts["replayed"])
            if self._closing:
                return
            self._wakeup.clear()
            if idle or not progressed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REPLAY_POLL):
                        await self._wakeup.wait()

    async def _replay_all(self, producer: AIOKafkaProducer, own: Spool) -> bool:
        progressed = False
        for spool in (*self._adopted, own):
            while not self._past_replay_time() and (chunk := await spool.read(REPLAY_RECORDS, REPLAY_BYTES)):
                try:
                    await self._deliver(producer, spool, chunk)
                    await spool.commit(chunk)
                except BaseException:
                    spool.rewind()  # the next attempt starts again from the checkpoint
                    raise
                progressed = True
        for spool in [s for s in self._adopted if s.idle()]:
            self._adopted.remove(spool)
            await spool.close(remove=True)
        return progressed

    def _past_replay_time(self) -> bool:
        return self._replay_until is not None and asyncio.get_running_loop().time() > self._replay_until

    async def _deliver(self, producer: AIOKafkaProducer, spool: Spool, chunk: Chunk) -> None:
        """Send a chunk and wait for every ack; records that reached Kafka already are skipped."""
        waiting = {
            r.position: self._inflight[r.position]
            for r in chunk.records
            if spool is self._own and r.position in self._inflight
        }
        if waiting:  # their fate decides whether they are sent again, and order depends on it
            await asyncio.wait(waiting.values())
        todo = [r for r in chunk.records if not spool.is_done(r.position) and not _acked(waiting.get(r.position))]
        futures = [await producer.send(r.topic, r.value, key=r.key) for r in todo]
        if futures:
            await asyncio.wait(futures)
        failed = [exc for exc in map(_failure, futures) if exc is not None]
        if failed:
            for record, future in zip(todo, futures, strict=True):
                if _acked(future):
                    spool.mark_done(record.position)
            raise failed[0]
        self._counts["replayed"] += len(todo)
        if self.metrics is not None:
            self.metrics.replayed.inc(len(todo))

    # -- metrics -----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        spools_held = [s for s in (self._own, *self._adopted) if s is not None]
        return {
            **self._counts,
            "spool_bytes": sum(s.disk_bytes for s in spools_held),
            "spool_records_pending": sum(s.pending for s in spools_held),
            "spooling": int(self._spooling),
            "inflight": self._inflight_records,
        }


def _acked(future: asyncio.Future | None) -> bool:
    return future is not None and future.done() and not future.cancelled() and future.exception() is None


def _failure(future: asyncio.Future) -> BaseException | None:
    """Why a settled future was not acknowledged; None when it was."""
    return KafkaError("acknowledgement cancelled") if future.cancelled() else future.exception()


def _retrieve(future: asyncio.Future) -> None:
    """Consume the outcome of an ack nobody waits for any more (asyncio would log it)."""
    if not future.cancelled():
        future.exception()
