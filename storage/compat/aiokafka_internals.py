"""aiokafka's private internals, as the hand-off stage (ingest/handoff/) uses them.

Talks to no service: each function reaches into an AIOKafkaProducer or aiokafka's record modules.
Contract test: tests/integration/storage/compat/test_aiokafka_internals.py (against the local Kafka).
"""

from collections.abc import Callable

import aiokafka.record.default_records as python_records
from aiokafka import AIOKafkaProducer

try:
    import aiokafka.record._crecords.default_records as compiled_records
except ImportError:  # aiokafka without its C extension
    compiled_records = None

VERIFIED = {"aiokafka": "0.14.0"}

Partitioner = Callable[[bytes, list[int], list[int]], int]


def partitioner(producer: AIOKafkaProducer) -> Partitioner:
    """The producer's own partitioner, `(key, all partitions, available partitions) → partition`.

    Relies on `producer._partitioner` (aiokafka 0.14.0: the callable `send()` applies to the
    serialized key). Records appended to batch builders must land where `send()` would put them,
    or one key's events split across partitions and lose their order. Returned once, bound, so
    a per-record caller pays no extra call. If it goes, this raises AttributeError on every
    connect and the producer spools everything; if its meaning changes, the contract test's
    partitions stop matching `send()`'s.
    """
    return producer._partitioner


def fail_pending(producer: AIOKafkaProducer, error: BaseException) -> None:
    """Fail every batch the producer still holds (queued or in flight) with `error`, at once.

    Relies on `producer._message_accumulator.fail_all(error)` (aiokafka 0.14.0). An idempotent
    producer retries a batch forever and `stop()` waits for it; closing while Kafka does not answer
    is only possible this way. If it goes, closing during an outage raises instead of finishing
    (the records are in the spool either way).
    """
    producer._message_accumulator.fail_all(error)


def replace_lz4_encode(encode: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Make every record batch aiokafka builds compress with `encode`; returns the one it replaced.

    Relies on the batch builders of `aiokafka.record.default_records` and of its C extension
    `aiokafka.record._crecords.default_records` (aiokafka 0.14.0) looking `lz4_encode` up as a
    module global at each compression: aiokafka has no setting for the lz4 level. If that
    changes, batches are still correct but compressed at aiokafka's own level (slower per record).
    """
    previous = (compiled_records or python_records).lz4_encode
    for module in (python_records, compiled_records):
        if module is not None:
            module.lz4_encode = encode
    return previous
