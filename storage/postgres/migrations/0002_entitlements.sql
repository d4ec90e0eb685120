-- Entitlements: limits come from the tier table in app/resources/features.py unless a workspace has an
-- override here; stock usage (posts held, bytes stored) is kept here because Redis counters
-- of stock features are rebuilt from it. Metered usage lives in Redis and the usage log only.
CREATE TABLE entitlement_overrides (
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    feature text NOT NULL,
    -- At most 10^15, app/resources/features.py's AMOUNT_MAX: Redis' Lua must count exactly up to it.
    limit_value bigint NOT NULL CHECK (limit_value BETWEEN 0 AND 1000000000000000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, feature)
);

CREATE TABLE entitlement_usage (
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    feature text NOT NULL,
    used bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, feature)
);
