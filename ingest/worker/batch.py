"""Ingest stage "batch": Kafka records gathered between two inserts, grouped for one INSERT per table.

Pure bookkeeping (no I/O), so the consumer's loop stays short and this part is unit-tested on
its own. A batch is due when it holds `max_rows` records or its first record is `max_ms` old,
whichever comes first.

`encode` turns each partition's records into the bytes of its INSERT ahead of time (`encode()`),
so the consumer can do that on its event loop while the previous batch is still being inserted;
the result is kept per partition and forgotten when that partition's records change.
"""

import time
from dataclasses import dataclass

from aiokafka import TopicPartition


@dataclass(slots=True)  # not frozen: the consumer gives pixel records their session in place
class ConsumedRecord:
    """What the consumer needs of a Kafka record (aiokafka's ConsumerRecord has the same fields)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple = ()


class InsertBatch:
    def __init__(self, max_rows: int, max_ms: int):
        self.max_rows, self.max_seconds = max_rows, max_ms / 1000
        self.records: dict[TopicPartition, list] = {}
        self.encoded: dict[TopicPartition, bytes | bytearray] = {}  # encode(tp, records), while records are unchanged
        self.ends: dict[TopicPartition, int] = {}  # one past the last offset seen, per partition
        self.rows = 0
        self.started: float | None = None  # monotonic time of the first record
        self.skipped: dict[str, int] = {}  # topic → records dropped as replays, until drain_skipped

    def add(self, fetched: dict[TopicPartition, list], floor: dict | None = None, prepare=None) -> int:
        """Take fetched records; returns how many were dropped as already in this batch.

        A partition sought back (a rebalance's seek to ClickHouse's stored offset, while this
        batch still holds what was fetched before it) delivers records again: seen doubling a
        whole batch after a Kafka restart. Only offsets past the batch's end are taken.
        `prepare(topic, partition, records)` sees each record taken, once, in offset order, except
        those at or below `floor` ((topic, partition) → highest offset known stored)."""
        dropped = 0
        for tp, records in fetched.items():
            if not records:
                continue
            end = self.ends.get(tp)
            if end is not None and records[0].offset < end:
                kept = [r for r in records if r.offset >= end]
                dropped += self._skip(tp.topic, len(records) - len(kept))
                if not kept:
                    continue
                records = kept
            if prepare is not None:
                # What is stored already stays in the batch until skip_stored (its offsets are
                # committed all the same), but it is not prepared again.
                high = floor.get((tp.topic, tp.partition), -1) if floor else -1
                fresh = records if records[0].offset > high else [r for r in records if r.offset > high]
                if fresh:
                    prepare(tp.topic, tp.partition, fresh)
            self.records.setdefault(tp, []).extend(records)
            self.encoded.pop(tp, None)
            self.ends[tp] = records[-1].offset + 1
            self.rows += len(records)
        if self.rows and self.started is None:
            self.started = time.monotonic()
        return dropped

    def room(self) -> int:
        return max(self.max_rows - self.rows, 1)

    def seconds_left(self) -> float:
        """Until the batch is due by age; the full interval while it is empty."""
        if self.started is None:
            return self.max_seconds
        return max(self.started + self.max_seconds - time.monotonic(), 0.0)

    def due(self) -> bool:
        """Full, or its first record is max_ms old, even if every record was then skipped as stored:
        its offsets still advance and are committed. So `due() or seconds_left() > 0` always holds,
        which the consumer's loop relies on (getmany with a zero timeout never yields)."""
        return self.rows >= self.max_rows or (self.started is not None and self.seconds_left() == 0.0)

    def by_topic(self) -> dict[str, list]:
        """Each topic's records, partition by partition, each partition in offset order."""
        topics: dict[str, list] = {}
        for tp in sorted(self.records, key=lambda tp: (tp.topic, tp.partition)):
            topics.setdefault(tp.topic, []).extend(self.records[tp])
        return topics

    def encode(self, encode) -> None:
        """Encode every partition not encoded yet: `encode(tp, records) -> bytes`."""
        for tp, records in self.records.items():
            if tp not in self.encoded and records:
                self.encoded[tp] = encode(tp, records)

    def encoded_by_topic(self, encode) -> dict[str, list[bytes | bytearray]]:
        """Each topic's encoded partitions in `by_topic` order, encoding what is not yet."""
        self.encode(encode)
        topics: dict[str, list[bytes | bytearray]] = {}
        for tp in sorted(self.records, key=lambda tp: (tp.topic, tp.partition)):
            if self.records[tp]:
                topics.setdefault(tp.topic, []).append(self.encoded[tp])
        return topics

    def next_offsets(self) -> dict[TopicPartition, int]:
        """The offsets to commit once the batch is in: one past each partition's last record."""
        return dict(self.ends)

    def keep(self, assigned) -> None:
        """Forget partitions this consumer no longer owns: their new owner reads them again."""
        for tp in [tp for tp in self.records if tp not in assigned]:
            self.rows -= len(self.records.pop(tp))
            self.encoded.pop(tp, None)
            del self.ends[tp]
        if not self.ends:
            self.started = None

    def skip_stored(self, stored: dict[tuple[str, int], int]) -> int:
        """Drop records at or below the offset ClickHouse already holds for their partition; how many."""
        skipped = 0
        for tp, records in self.records.items():
            high = stored.get((tp.topic, tp.partition))
            if high is not None and records and records[0].offset <= high:
                kept = [r for r in records if r.offset > high]
                skipped += self._skip(tp.topic, len(records) - len(kept))
                self.records[tp] = kept
                self.encoded.pop(tp, None)
        self.rows -= skipped
        return skipped

    def _skip(self, topic: str, n: int) -> int:
        if n:
            self.skipped[topic] = self.skipped.get(topic, 0) + n
        return n

    def drain_skipped(self) -> dict[str, int]:
        """Records `add` and `skip_stored` dropped since the last call, per topic."""
        skipped, self.skipped = self.skipped, {}
        return skipped

    def take(self) -> "InsertBatch":
        """This batch's records in a new InsertBatch; this one starts empty."""
        taken = InsertBatch(self.max_rows, int(self.max_seconds * 1000))
        taken.records, taken.encoded, taken.ends = self.records, self.encoded, self.ends
        taken.rows, taken.started = self.rows, self.started
        self.records, self.encoded, self.ends, self.rows, self.started = {}, {}, {}, 0, None
        return taken
