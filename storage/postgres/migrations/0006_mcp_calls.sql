-- The MCP gateway's audit log: one row per tool call that reached a known tool (who called
-- which tool, how long it took, how it ended). Arguments and results are not kept: they may
-- hold file contents or personal data.
CREATE TABLE mcp_tool_calls (
    id bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    api_key_id bigint REFERENCES api_keys (id) ON DELETE SET NULL,
    server text NOT NULL,
    tool text NOT NULL,
    outcome text NOT NULL
        CHECK (outcome IN ('ok', 'tool_error', 'invalid_arguments', 'timeout', 'unavailable', 'error')),
    duration_ms integer NOT NULL CHECK (duration_ms >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mcp_tool_calls_workspace_idx ON mcp_tool_calls (workspace_id, created_at);
