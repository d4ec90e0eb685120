-- Per-domain privacy and session settings (app/pixel/domains.py says what each means):
-- how long a session lasts without an event, whether Sec-GPC / DNT drop an event, which page
-- paths are never tracked (glob patterns, app/pixel/sites.py), and how often the salt of the
-- visitor id changes. Existing rows take the defaults, which are what the pixel did before.
ALTER TABLE pixel_domains
    ADD COLUMN session_timeout_minutes integer NOT NULL DEFAULT 30
        CHECK (session_timeout_minutes BETWEEN 1 AND 240),
    ADD COLUMN honor_privacy_signals boolean NOT NULL DEFAULT true,
    ADD COLUMN excluded_paths text[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(excluded_paths) <= 50 AND array_position(excluded_paths, NULL) IS NULL),
    ADD COLUMN visitor_id_rotation text NOT NULL DEFAULT 'daily'
        CHECK (visitor_id_rotation IN ('daily', 'weekly', 'monthly'));
