-- Engagement: what pixel.js measures on each page, as columns the Stats API and analysts read without
-- parsing JSON. A pageview's properties carry its `pageview_id` (16 hex characters, new per pageview);
-- an `engagement` event carries the same id with `engaged_ms` (time the page was visible, focused and
-- in use since the last engagement event of that pageview) and `scroll_depth` (the deepest % of the
-- page seen so far). Time on page is the sum of a pageview's engaged_ms, its scroll depth the max.
-- ClickHouse computes the columns at insert from `event` and `properties`: the consumer's rows do not
-- name them (JSONEachRow fills an omitted column with its DEFAULT), so the wire format is unchanged.
-- The properties come from browsers: a value that is not a JSON number reads 0, a number is clamped
-- (engaged_ms to 0..24 h, scroll_depth to 0..100), and an id that is not a short token reads '', so
-- no input can fail an insert. Other events read '' and 0.
-- Rows stored before this file compute the same expressions when read (ClickHouse evaluates a
-- DEFAULT for parts written without the column): the old script sent no pageview_id and no
-- engagement events, so they read '' and 0.
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS pageview_id String DEFAULT if(
        event IN ('pageview', 'engagement') AND JSONType(properties, 'pageview_id') = 'String'
            AND match(JSONExtractString(properties, 'pageview_id'), '^[0-9A-Za-z_-]{1,64}$'),
        JSONExtractString(properties, 'pageview_id'),
        '') AFTER session_id,
    ADD COLUMN IF NOT EXISTS engaged_ms UInt32 DEFAULT if(
        event = 'engagement' AND JSONType(properties, 'engaged_ms') IN ('Int64', 'UInt64', 'Double'),
        toUInt32(least(greatest(JSONExtractFloat(properties, 'engaged_ms'), 0), 86400000)),
        0) AFTER pageview_id,
    ADD COLUMN IF NOT EXISTS scroll_depth UInt8 DEFAULT if(
        event = 'engagement' AND JSONType(properties, 'scroll_depth') IN ('Int64', 'UInt64', 'Double'),
        toUInt8(least(greatest(round(JSONExtractFloat(properties, 'scroll_depth')), 0), 100)),
        0) AFTER engaged_ms;
