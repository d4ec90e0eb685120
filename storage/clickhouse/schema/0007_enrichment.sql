-- What the pixel learns about each event besides its page (app/pixel/enrichment.py): the device
-- from a maintained User-Agent parser, the place from the client address (looked up before the
-- address is dropped; never stored), where the visit came from, and its session
-- (ingest/worker/sessions.py; 0 when the site has sessions off). Rows stored before these columns
-- existed read as empty strings and session 0.
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS os_version LowCardinality(String) DEFAULT '' AFTER os,
    ADD COLUMN IF NOT EXISTS device_brand LowCardinality(String) DEFAULT '' AFTER device,
    ADD COLUMN IF NOT EXISTS device_model LowCardinality(String) DEFAULT '' AFTER device_brand,
    ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT '' AFTER is_bot,
    ADD COLUMN IF NOT EXISTS region LowCardinality(String) DEFAULT '' AFTER country,
    ADD COLUMN IF NOT EXISTS city LowCardinality(String) DEFAULT '' AFTER region,
    ADD COLUMN IF NOT EXISTS referrer_source LowCardinality(String) DEFAULT '' AFTER referrer_host,
    ADD COLUMN IF NOT EXISTS channel LowCardinality(String) DEFAULT '' AFTER referrer_source,
    ADD COLUMN IF NOT EXISTS session_id UInt64 DEFAULT 0 AFTER visitor_id;
