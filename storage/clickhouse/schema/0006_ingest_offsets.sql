-- The highest Kafka offset inserted per (topic, partition), written by the same INSERT as the
-- rows themselves (each raw table's _topic/_partition/_offset feed it through a view). On
-- partition assignment the consumer seeks to max(committed offset, max_offset + 1), so a crash
-- between an insert and its offset commit replays nothing. It is not subject to the raw tables'
-- TTL. A topic deleted and created again restarts at offset 0: delete its rows here first
-- (ALTER TABLE ingest_offsets DELETE WHERE topic = '…'), or the consumer would skip its records.
CREATE TABLE IF NOT EXISTS ingest_offsets (
    topic LowCardinality(String),
    partition UInt32,
    max_offset SimpleAggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree
ORDER BY (topic, partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_offsets_events_mv TO ingest_offsets AS
SELECT _topic AS topic, _partition AS partition, max(_offset) AS max_offset
FROM events GROUP BY topic, partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_offsets_usage_mv TO ingest_offsets AS
SELECT _topic AS topic, _partition AS partition, max(_offset) AS max_offset
FROM usage_events WHERE _topic != '' GROUP BY topic, partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_offsets_dropped_mv TO ingest_offsets AS
SELECT _topic AS topic, _partition AS partition, max(_offset) AS max_offset
FROM dropped_events GROUP BY topic, partition;
