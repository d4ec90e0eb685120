-- The usage log: one row per accepted usage record (ingest/usage_log.py's fields), filled from
-- Kafka topic sluice.usage. The record of truth for metered features.
-- ReplacingMergeTree on the sorting key: a replayed record (same workspace, feature, time and
-- event id) collapses into one, so readers sum with FINAL.
CREATE TABLE IF NOT EXISTS usage_events (
    event_id String,
    workspace_id UInt64,
    feature LowCardinality(String),
    quantity Int64,
    metadata String,
    idempotency_key String,
    occurred_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (workspace_id, feature, occurred_at, event_id)
