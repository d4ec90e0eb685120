-- Tracked pixel events (ingest/events.py PixelEvent), filled from Kafka topic <prefix>pixel.
-- ReplacingMergeTree on (workspace_id, time, event_id): the consumer's offset bookkeeping keeps
-- replays out, and this is the second net for the rare record the producer sent twice (same
-- event id, same time), collapsed by merges or by reading with FINAL.
-- _topic/_partition/_offset say where each row came from; ingest_offsets (0006) keeps their
-- maximum so a restarted consumer skips what is already here. The TTL is set at start from
-- SLUICE_EVENTS_TTL_DAYS (storage/clickhouse/client.py set_events_ttl).
-- The constraints turn a record missing its identity into an error, so it goes to the
-- dead-letter topic instead of landing as a row of defaults.
CREATE TABLE IF NOT EXISTS events (
    event_id UUID,
    workspace_id UInt64,
    event LowCardinality(String),
    time DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    client_time Nullable(DateTime64(3, 'UTC')),
    url String,
    host LowCardinality(String),
    path String,
    referrer String,
    referrer_host LowCardinality(String),
    utm_source LowCardinality(String),
    utm_medium LowCardinality(String),
    utm_campaign LowCardinality(String),
    utm_term String,
    utm_content String,
    properties String,
    visitor_id String,
    ip_prefix String,
    user_agent String,
    browser LowCardinality(String),
    browser_version LowCardinality(String),
    os LowCardinality(String),
    device LowCardinality(String),
    is_bot Bool,
    source LowCardinality(String),
    _topic LowCardinality(String),
    _partition UInt32,
    _offset UInt64,
    CONSTRAINT has_event_id CHECK NOT empty(event_id),
    CONSTRAINT has_workspace CHECK workspace_id > 0,
    CONSTRAINT has_time CHECK time > toDateTime64('2000-01-01 00:00:00', 3, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (workspace_id, time, event_id)
