"""The MCP gateway's registry: which servers exist (from the JSON file SLUICE_MCP_CONFIG names) and
the one path every tool call takes: find the tool, validate its arguments against the tool's input
schema, run it under a deadline, record the call.

Built-in servers run in process (app/mcp_servers/filesystem.py, analytics.py); external ones are
reached with the official `mcp` SDK (app/mcp_servers/external.py).
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
from jsonschema import validators

from app.access.scopes import grants
from app.http.errors import AccessDenied, BadGateway, GatewayTimeout, ResourceNotFound, ValidationFailed
from storage.config import MCP_MAX_TIMEOUT_SECONDS, McpConfig
from storage.errors import Unavailable
from storage.postgres import mcp_calls

log = logging.getLogger("sluice.mcp")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict
    # Scopes a caller needs besides mcp:write (which calling any tool takes): a tool that reads
    # needs what reading the same data elsewhere needs, e.g. mcp:read as GET /mcp/resources does.
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Caller:
    """Who calls: built-in servers scope everything to this workspace; tools check the scopes."""

    workspace_id: int
    key_id: int
    scopes: frozenset[str] = frozenset()


class ToolFailed(Exception):
    """The tool ran and said no (a missing file, an error from the server): answered in the result."""


class Server(Protocol):
    id: str
    name: str
    description: str
    kind: str
    resource_schemes: tuple[str, ...]
    timeout_seconds: float

    def known_tools(self) -> list[Tool] | None:
        """The tools, when known without asking the server (built-ins); None otherwise."""
        ...

    async def list_tools(self) -> list[Tool]: ...

    async def call_tool(self, caller: Caller, name: str, arguments: dict) -> dict: ...

    async def read_resource(self, caller: Caller, uri: str) -> dict: ...


@dataclass
class Registry:
    servers: dict[str, Server] = field(default_factory=dict)

    def server(self, server_id: str) -> Server:
        server = self.servers.get(server_id)
        if server is None:
            raise ResourceNotFound(f"MCP server {server_id!r} not found.")
        return server

    async def tool(self, server: Server, name: str) -> Tool:
        for tool in await server.list_tools():
            if tool.name == name:
                return tool
        raise ResourceNotFound(f"Tool {name!r} not found on MCP server {server.id!r}.")

    def server_for_uri(self, uri: str) -> Server:
        scheme, sep, _ = uri.partition(":")
        if sep:
            for server in self.servers.values():
                if scheme.lower() in server.resource_schemes:
                    return server
        raise ResourceNotFound(f"No MCP server serves resources like {uri[:100]!r}.")


def schema_errors(schema: dict, arguments: dict) -> dict[str, list[str]]:
    """Per-field messages, keyed `arguments.<path>`, from validating against the tool's schema."""
    validator_class = validators.validator_for(schema)
    errors: dict[str, list[str]] = {}
    for error in validator_class(schema).iter_errors(arguments):
        path = ".".join(str(p) for p in error.absolute_path)
        names = [path] if path else [""]
        # Both keywords apply to objects only, and their schema holds a list and a mapping.
        instance, value, subschema = error.instance, error.validator_value, error.schema
        if error.validator == "required" and isinstance(instance, dict) and isinstance(value, list):
            missing = [p for p in value if p not in instance]
            names = [".".join(filter(None, (path, m))) for m in missing]
        elif (
            error.validator == "additionalProperties" and isinstance(instance, dict) and isinstance(subschema, Mapping)
        ):
            known = set(subschema.get("properties", {}))
            names = [".".join(filter(None, (path, k))) for k in instance if k not in known]
        for name in names:
            key = f"arguments.{name}" if name else "arguments"
            errors.setdefault(key, []).append(error.message)
    return errors


async def call_tool(registry: Registry, pool, caller: Caller, server_id: str, name: str, arguments: dict) -> dict:
    """The tool's result; 404, 422, 502 or 504 errors otherwise. Every call to a known tool is recorded."""
    server = registry.server(server_id)
    tool = await registry.tool(server, name)
    check_scopes(tool, server, caller)
    started, outcome = time.monotonic(), "error"
    try:
        errors = schema_errors(tool.input_schema, arguments)
        if errors:
            raise ValidationFailed(errors)
        result, outcome = await _run(server, caller, name, arguments)
        return result
    except ValidationFailed:
        outcome = "invalid_arguments"
        raise
    except GatewayTimeout:
        outcome = "timeout"
        raise
    except (BadGateway, Unavailable):
        outcome = "unavailable"
        raise
    finally:
        duration_ms = int((time.monotonic() - started) * 1000)
        await mcp_calls.record_call(pool, caller.workspace_id, caller.key_id, server.id, name, outcome, duration_ms)


def check_scopes(tool: Tool, server: Server, caller: Caller) -> None:
    for scope in tool.scopes:
        if not grants(caller.scopes, scope):
            raise AccessDenied(
                f"Insufficient permissions. The tool {tool.name!r} of MCP server {server.id!r} "
                f"also requires scope: {scope}"
            )


async def _run(server: Server, caller: Caller, name: str, arguments: dict) -> tuple[dict, str]:
    try:
        async with asyncio.timeout(server.timeout_seconds):
            return await server.call_tool(caller, name, arguments), "ok"
    except TimeoutError:
        raise GatewayTimeout(f"MCP server {server.id!r} did not answer within {server.timeout_seconds:g} s.") from None
    except ToolFailed as exc:
        return {"is_error": True, "content": str(exc)}, "tool_error"


def read_config(path: Path) -> list[dict]:
    """The `servers` list of the config file (JSON); ValueError naming the problem otherwise."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"MCP config {path}: {exc}") from exc
    servers = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(servers, list) or not all(isinstance(s, dict) and isinstance(s.get("id"), str) for s in servers):
        raise ValueError(f'MCP config {path}: expected {{"servers": [{{"id": …}}, …]}}')
    ids = [s["id"] for s in servers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"MCP config {path}: server ids must be unique")
    return servers


def server_timeout(entry: dict, config: McpConfig) -> float:
    value = entry.get("timeout_seconds", config.timeout_seconds)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MCP_MAX_TIMEOUT_SECONDS:
        raise ValueError(f"MCP server {entry['id']!r}: timeout_seconds must be in (0, {MCP_MAX_TIMEOUT_SECONDS:g}]")
    return float(value)
