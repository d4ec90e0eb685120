-- Webhooks: endpoints, the transactional outbox of domain events, one delivery per
-- (endpoint, event) and one row per attempt made.

CREATE TABLE webhook_endpoints (
    id bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url text NOT NULL,
    events text[] NOT NULL,
    -- Kept in clear: signing needs the key itself (whsec_<base64>).
    secret text NOT NULL,
    -- The secret replaced by the last rotation, signing alongside until it expires.
    previous_secret text,
    previous_secret_expires_at timestamptz,
    is_active boolean NOT NULL DEFAULT true,
    disabled_reason text,
    success_count bigint NOT NULL DEFAULT 0,
    failure_count bigint NOT NULL DEFAULT 0,
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- Start of the current run of failures; the disable threshold needs its length.
    failing_since timestamptz,
    last_delivery_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_workspace_idx ON webhook_endpoints (workspace_id, id);

-- Written in the transaction of the change it reports. No foreign key: a workspace.deleted
-- event outlives its workspace.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE DEFAULT 'evt_' || replace(gen_random_uuid()::text, '-', ''),
    event_type text NOT NULL,
    workspace_id bigint NOT NULL,
    -- Set for account-wide events (workspace.*): every workspace of the account hears them.
    account_id bigint,
    payload jsonb NOT NULL,
    -- At most one event per key (entitlement.limit_reached once per feature and period).
    dedupe_key text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE dispatched_at IS NULL;

CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    endpoint_id bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id text NOT NULL,
    event_type text NOT NULL,
    -- The exact bytes sent, frozen at fan-out so every retry sends the same body.
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'retrying', 'success', 'failed')),
    attempt integer NOT NULL DEFAULT 0,  -- attempts made so far
    response_code integer,
    response_body text,
    error text,
    next_attempt_at timestamptz,
    -- A worker's claim: nobody else sends it until the lease runs out.
    lease_token uuid,
    lease_until timestamptz,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    status_code integer,
    error text,
    response_body text,
    duration_ms integer NOT NULL,
    started_at timestamptz NOT NULL
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);
