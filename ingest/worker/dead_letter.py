"""Ingest stage "dead letters": records ClickHouse refuses go to the dead-letter topic, the rest in.

A batch ClickHouse refuses holds at least one bad record. Records that are not JSON objects are
sent away first; what remains is split in halves until each refused part is a single record,
which ClickHouse itself has judged bad (so a record is dead-lettered exactly when ClickHouse
refuses it alone). Halves go left before right, so within each partition the inserted records
stay a prefix plus the dead letters before it: a crash mid-way loses nothing and the stored
offsets (ingest_offsets) still say where to resume. One bad record in n costs about 2·log2(n)
inserts.

A dead letter keeps the original key and value; headers say why and where it came from.
"""

import logging

from aiokafka import AIOKafkaProducer

from ingest.events import decode
from ingest.worker.metrics import DEAD_LETTERS
from storage.clickhouse.writer import Rejected

log = logging.getLogger(__name__)


LOGGED_IN_FULL = 20


class DeadLetters:
    def __init__(self, bootstrap_servers: str, topic: str):
        self.topic = topic
        self.sent = 0
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True, compression_type="lz4"
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, record, reason: str) -> None:
        headers = list(record.headers or ()) + [
            ("sluice-reason", reason.encode()),
            ("sluice-topic", record.topic.encode()),
            ("sluice-partition", str(record.partition).encode()),
            ("sluice-offset", str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(self.topic, record.value or b"", key=record.key, headers=headers)
        self.sent += 1
        DEAD_LETTERS.labels(record.topic).inc()
        # A flood of bad records (an old producer, a wrong topic) must not flood the log: the first
        # few in full, then every 1000th; the lag line carries the running total.
        if self.sent <= LOGGED_IN_FULL or self.sent % 1000 == 0:
            log.warning(
                "dead letter #%d: %s[%d]@%d to %s: %s",
                self.sent,
                record.topic,
                record.partition,
                record.offset,
                self.topic,
                reason[:300],
            )


def decode_problem(value: bytes | None) -> str | None:
    """Why a value cannot be a row, or None when it is a JSON object (ClickHouse judges the rest)."""
    if not value:
        return "empty record"
    try:
        decode(value)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        return f"not a JSON object: {exc}"
    return None


async def insert_sorting_out(insert, records: list, dead_letters: DeadLetters) -> int:
    """Insert `records` (via `await insert(records)`), dead-lettering the ones refused; rows inserted."""
    parsable = []
    for record in records:
        problem = decode_problem(record.value)
        if problem is None:
            parsable.append(record)
        else:
            await dead_letters.send(record, problem)
    return await _bisect(insert, parsable, dead_letters)


async def _bisect(insert, records: list, dead_letters: DeadLetters) -> int:
    if not records:
        return 0
    try:
        return await insert(records)
    except Rejected as exc:
        if len(records) == 1:
            await dead_letters.send(records[0], f"refused by ClickHouse: {exc}")
            return 0
    middle = len(records) // 2
    return await _bisect(insert, records[:middle], dead_letters) + await _bisect(insert, records[middle:], dead_letters)
