-- Accounts own workspaces; a workspace key manages its account's workspaces and,
-- inside its own workspace, everything else.
CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspaces (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id),
    name varchar(255) NOT NULL,
    slug varchar(100) NOT NULL UNIQUE,
    tier text NOT NULL DEFAULT 'free'
        CHECK (tier IN ('free', 'starter', 'pro', 'agency', 'enterprise')),
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspaces_account_idx ON workspaces (account_id, id);

CREATE TABLE api_keys (
    id bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name varchar(255) NOT NULL,
    prefix text NOT NULL,
    -- SHA-256 of the whole key; the key itself is never stored.
    key_hash bytea NOT NULL UNIQUE,
    scopes text[] NOT NULL,
    rate_limit_tier text
        CHECK (rate_limit_tier IN ('free', 'starter', 'pro', 'agency', 'enterprise')),
    last_used_at timestamptz,
    expires_at timestamptz,
    -- Set in the future while a rotated key is in its grace period.
    revoked_at timestamptz,
    rotated_to_id bigint REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id, id);
