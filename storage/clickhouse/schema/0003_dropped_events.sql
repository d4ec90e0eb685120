-- Events the API did not accept, counted by reason (ingest/events.py Drop), from topic
-- <prefix>dropped. A Drop has no id of its own, so its Kafka coordinates are its identity:
-- ReplacingMergeTree on them collapses a replayed record, should one ever slip past the
-- consumer's offset bookkeeping.
CREATE TABLE IF NOT EXISTS dropped_events (
    workspace_id UInt64,
    reason LowCardinality(String),
    source LowCardinality(String),
    count UInt64,
    time DateTime64(3, 'UTC'),
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    CONSTRAINT has_reason CHECK reason != '',
    CONSTRAINT has_time CHECK time > toDateTime64('2000-01-01 00:00:00', 3, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (workspace_id, time, reason, _topic, _partition, _offset)
