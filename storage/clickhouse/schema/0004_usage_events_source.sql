-- usage_events (0001) learns where each row came from, like events, so the consumer can skip
-- records already inserted (ingest_offsets, 0006), and refuses a record with no identity.
ALTER TABLE usage_events
    ADD COLUMN IF NOT EXISTS _topic LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS _partition UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS _offset UInt64 DEFAULT 0;

ALTER TABLE usage_events ADD CONSTRAINT IF NOT EXISTS has_event_id CHECK event_id != '';

ALTER TABLE usage_events ADD CONSTRAINT IF NOT EXISTS has_workspace CHECK workspace_id > 0;
