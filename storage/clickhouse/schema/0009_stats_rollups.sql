-- The Stats API's hourly rollups (storage/clickhouse/stats.py), read through the narrowest that has
-- every column a query needs: stats_hourly_sites (event names: totals, time series, goals),
-- stats_hourly_pages (and paths), stats_hourly (below).
-- stats_hourly: one row per site, hour and combination
-- of the event-level values it can break down by, bots left out. Keyed by what a visit keeps from
-- its first event to its last (country, device, browser, os: one address and one user agent per
-- visitor id) plus the event's own name and path, so it answers visitors, pageviews and events by
-- page, event, country, device, browser, os and time without reading `events`. Region, city and the
-- versions would multiply its rows; queries on them read `events`. Like the other rollups it sees
-- inserts made after it exists: backfill older rows with the view's query (README, Columns).
CREATE TABLE IF NOT EXISTS stats_hourly (
    workspace_id UInt64,
    host LowCardinality(String),
    hour DateTime('UTC'),
    event LowCardinality(String),
    path String,
    country LowCardinality(String),
    device LowCardinality(String),
    browser LowCardinality(String),
    os LowCardinality(String),
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    visitors AggregateFunction(uniq, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace_id, host, hour, event, path, country, device, browser, os);

CREATE MATERIALIZED VIEW IF NOT EXISTS stats_hourly_mv TO stats_hourly AS
SELECT workspace_id, host, toStartOfHour(time) AS hour, event, path, country, device, browser, os,
       countIf(event = 'pageview') AS pageviews, count() AS events, uniqState(visitor_id) AS visitors
FROM events
WHERE NOT is_bot
GROUP BY workspace_id, host, hour, event, path, country, device, browser, os;

CREATE TABLE IF NOT EXISTS stats_hourly_pages (
    workspace_id UInt64,
    host LowCardinality(String),
    hour DateTime('UTC'),
    event LowCardinality(String),
    path String,
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    visitors AggregateFunction(uniq, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace_id, host, hour, event, path);

CREATE MATERIALIZED VIEW IF NOT EXISTS stats_hourly_pages_mv TO stats_hourly_pages AS
SELECT workspace_id, host, toStartOfHour(time) AS hour, event, path,
       countIf(event = 'pageview') AS pageviews, count() AS events, uniqState(visitor_id) AS visitors
FROM events
WHERE NOT is_bot
GROUP BY workspace_id, host, hour, event, path;

CREATE TABLE IF NOT EXISTS stats_hourly_sites (
    workspace_id UInt64,
    host LowCardinality(String),
    hour DateTime('UTC'),
    event LowCardinality(String),
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    visitors AggregateFunction(uniq, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace_id, host, hour, event);

CREATE MATERIALIZED VIEW IF NOT EXISTS stats_hourly_sites_mv TO stats_hourly_sites AS
SELECT workspace_id, host, toStartOfHour(time) AS hour, event,
       countIf(event = 'pageview') AS pageviews, count() AS events, uniqState(visitor_id) AS visitors
FROM events
WHERE NOT is_bot
GROUP BY workspace_id, host, hour, event;
