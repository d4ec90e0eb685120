-- Sessions (ingest/worker/sessions.py decides each event's session_id): sessions_state holds one
-- aggregate row per (workspace, session), fed by a view on every insert into events, and the view
-- `sessions` reads it back as one row per session. A session's rows merge whatever batches its
-- events came in, so a session is never cut at an hour or a day, and the ordering argument
-- (time, event_id) makes entry/exit pages the same whatever order the rows arrived in.
-- The consumer rebuilds its state from sessions_state when it is assigned a partition;
-- _partition and last_received are there for that.
CREATE TABLE IF NOT EXISTS sessions_state (
    workspace_id UInt64,
    session_id UInt64,
    _partition SimpleAggregateFunction(max, UInt32),
    first_time SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_time SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    last_received SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    pageview_count SimpleAggregateFunction(sum, UInt64),
    event_count SimpleAggregateFunction(sum, UInt64),
    interaction_count SimpleAggregateFunction(sum, UInt64),
    visitor_first AggregateFunction(argMin, String, Tuple(DateTime64(3, 'UTC'), UUID)),
    visitor_ids AggregateFunction(groupUniqArray(8), String),
    entry_state AggregateFunction(argMinIf, String, Tuple(DateTime64(3, 'UTC'), UUID), UInt8),
    exit_state AggregateFunction(argMaxIf, String, Tuple(DateTime64(3, 'UTC'), UUID), UInt8),
    -- What the session's first event says: (host, referrer, referrer_source, channel, utm_source,
    -- utm_medium, utm_campaign, utm_term, utm_content, country, region, city, device, browser,
    -- browser_version, os, os_version)
    first_state AggregateFunction(
        argMin,
        Tuple(String, String, String, String, String, String, String, String, String,
              String, String, String, String, String, String, String, String),
        Tuple(DateTime64(3, 'UTC'), UUID)
    )
) ENGINE = AggregatingMergeTree
ORDER BY (workspace_id, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_state_mv TO sessions_state AS
SELECT
    workspace_id,
    session_id,
    max(_partition) AS _partition,
    min(time) AS first_time,
    max(time) AS last_time,
    max(received_at) AS last_received,
    countIf(event = 'pageview') AS pageview_count,
    count() AS event_count,
    countIf(event NOT IN ('pageview', 'engagement')) AS interaction_count,
    argMinState(visitor_id, (time, event_id)) AS visitor_first,
    groupUniqArrayState(8)(visitor_id) AS visitor_ids,
    argMinIfState(path, (time, event_id), event = 'pageview') AS entry_state,
    argMaxIfState(path, (time, event_id), event = 'pageview') AS exit_state,
    argMinState(
        tuple(toString(host), referrer, toString(referrer_source), toString(channel), toString(utm_source),
              toString(utm_medium), toString(utm_campaign), utm_term, utm_content, toString(country),
              toString(region), toString(city), toString(device), toString(browser), toString(browser_version),
              toString(os), toString(os_version)),
        (time, event_id)
    ) AS first_state
FROM events
WHERE session_id != 0
GROUP BY workspace_id, session_id;

-- One row per session. bounce: one pageview and no interaction (any event but pageview and
-- engagement). duration: seconds from its first to its last event. is_late: a late event's
-- session of its own (ingest/worker/sessions.py).
CREATE VIEW IF NOT EXISTS sessions AS
SELECT
    workspace_id,
    session_id,
    bitTest(session_id, 63) AS is_late,
    tupleElement(argMinMerge(first_state), 1) AS host,
    argMinMerge(visitor_first) AS visitor_id,
    min(first_time) AS start,
    max(last_time) AS end,
    toUInt32(dateDiff('second', start, end)) AS duration,
    sum(pageview_count) AS pageviews,
    sum(event_count) AS events,
    sum(interaction_count) AS interactions,
    pageviews = 1 AND interactions = 0 AS is_bounce,
    argMinIfMerge(entry_state) AS entry_page,
    argMaxIfMerge(exit_state) AS exit_page,
    tupleElement(argMinMerge(first_state), 2) AS referrer,
    tupleElement(argMinMerge(first_state), 3) AS referrer_source,
    tupleElement(argMinMerge(first_state), 4) AS channel,
    tupleElement(argMinMerge(first_state), 5) AS utm_source,
    tupleElement(argMinMerge(first_state), 6) AS utm_medium,
    tupleElement(argMinMerge(first_state), 7) AS utm_campaign,
    tupleElement(argMinMerge(first_state), 8) AS utm_term,
    tupleElement(argMinMerge(first_state), 9) AS utm_content,
    tupleElement(argMinMerge(first_state), 10) AS country,
    tupleElement(argMinMerge(first_state), 11) AS region,
    tupleElement(argMinMerge(first_state), 12) AS city,
    tupleElement(argMinMerge(first_state), 13) AS device,
    tupleElement(argMinMerge(first_state), 14) AS browser,
    tupleElement(argMinMerge(first_state), 15) AS browser_version,
    tupleElement(argMinMerge(first_state), 16) AS os,
    tupleElement(argMinMerge(first_state), 17) AS os_version
FROM sessions_state
GROUP BY workspace_id, session_id;

-- Visits, bounce rate and visit duration per site (host of the entry) and day of the session's start:
-- computed from `sessions` when read, as a session's bounce and duration change until it ends.
CREATE VIEW IF NOT EXISTS sessions_daily AS
SELECT
    s.workspace_id AS workspace_id,
    s.host AS host,
    toDate(s.start) AS day,
    count() AS visits,
    uniq(s.visitor_id) AS visitors,
    sum(s.pageviews) AS pageviews,
    round(countIf(s.is_bounce) / count(), 4) AS bounce_rate,
    round(avg(s.duration), 1) AS avg_duration,
    round(sum(s.pageviews) / count(), 2) AS pageviews_per_visit
FROM sessions AS s
WHERE NOT s.is_late
GROUP BY workspace_id, host, day;
