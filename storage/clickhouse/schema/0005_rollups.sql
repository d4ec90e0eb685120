-- Rollups the API and analysts read instead of scanning events: each is a target table plus
-- the materialized view that feeds it on every insert into the raw table. They see inserts
-- made after they exist; backfill older rows with INSERT INTO <rollup> SELECT … (the view's
-- query). They keep no TTL: they are small and outlive the raw rows on purpose.
-- Read the aggregate columns with sum(…) / uniqMerge(…) and GROUP BY: parts merge lazily.

CREATE TABLE IF NOT EXISTS pageviews_hourly (
    workspace_id UInt64,
    hour DateTime('UTC'),
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    visitors AggregateFunction(uniq, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS pageviews_hourly_mv TO pageviews_hourly AS
SELECT workspace_id, toStartOfHour(time) AS hour,
       countIf(event = 'pageview') AS pageviews, count() AS events, uniqState(visitor_id) AS visitors
FROM events GROUP BY workspace_id, hour;

CREATE TABLE IF NOT EXISTS pageviews_daily (
    workspace_id UInt64,
    day Date,
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    visitors AggregateFunction(uniq, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (workspace_id, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS pageviews_daily_mv TO pageviews_daily AS
SELECT workspace_id, toDate(time) AS day,
       countIf(event = 'pageview') AS pageviews, count() AS events, uniqState(visitor_id) AS visitors
FROM events GROUP BY workspace_id, day;

CREATE TABLE IF NOT EXISTS top_pages_daily (
    workspace_id UInt64,
    day Date,
    path String,
    pageviews UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (workspace_id, day, path);

CREATE MATERIALIZED VIEW IF NOT EXISTS top_pages_daily_mv TO top_pages_daily AS
SELECT workspace_id, toDate(time) AS day, path, count() AS pageviews
FROM events WHERE event = 'pageview' GROUP BY workspace_id, day, path;

CREATE TABLE IF NOT EXISTS usage_daily (
    workspace_id UInt64,
    day Date,
    feature LowCardinality(String),
    quantity Int64,
    records UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (workspace_id, day, feature);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT workspace_id, toDate(occurred_at) AS day, feature, sum(quantity) AS quantity, count() AS records
FROM usage_events GROUP BY workspace_id, day, feature;

CREATE TABLE IF NOT EXISTS dropped_daily (
    workspace_id UInt64,
    day Date,
    reason LowCardinality(String),
    source LowCardinality(String),
    dropped UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (workspace_id, day, reason, source);

CREATE MATERIALIZED VIEW IF NOT EXISTS dropped_daily_mv TO dropped_daily AS
SELECT workspace_id, toDate(time) AS day, reason, source, sum(count) AS dropped
FROM dropped_events GROUP BY workspace_id, day, reason, source;
