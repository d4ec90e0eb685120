"""The MCP gateway's tool-call log in Postgres (who, which tool, duration, outcome)."""

import asyncpg

OUTCOMES = ("ok", "tool_error", "invalid_arguments", "timeout", "unavailable", "error")
INSERT_CALL = """
INSERT INTO mcp_tool_calls (workspace_id, api_key_id, server, tool, outcome, duration_ms)
VALUES ($1, $2, $3, $4, $5, $6)"""


async def record_call(
    pool: asyncpg.Pool, workspace_id: int, api_key_id: int, server: str, tool: str, outcome: str, duration_ms: int
) -> None:
    await pool.execute(INSERT_CALL, workspace_id, api_key_id, server, tool, outcome, duration_ms)
