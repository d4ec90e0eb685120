"""Builds the MCP registry from the config file: each entry becomes a built-in or external server."""

from app.mcp_servers.analytics import AnalyticsServer
from app.mcp_servers.external import ExternalServer
from app.mcp_servers.filesystem import FilesystemServer
from app.mcp_servers.registry import McpSettings, Registry, read_config, server_timeout

BUILTINS = {"filesystem": FilesystemServer, "analytics": AnalyticsServer}
EXTERNAL = ("streamable_http", "stdio")


def build_server(entry: dict, settings: McpSettings):
    kind, timeout = entry.get("type", "builtin"), server_timeout(entry, settings)
    if kind == "builtin":
        builtin = BUILTINS.get(entry.get("builtin", entry["id"]))
        if builtin is None:
            raise ValueError(f"MCP server {entry['id']!r}: no built-in server named {entry.get('builtin', entry['id'])!r}")
        return builtin(entry["id"], entry.get("name", entry["id"]), entry.get("description", ""), settings, timeout)
    if kind not in EXTERNAL:
        raise ValueError(f"MCP server {entry['id']!r}: type must be builtin, {' or '.join(EXTERNAL)}")
    if kind == "stdio" and not settings.allow_stdio:
        raise ValueError(f"MCP server {entry['id']!r}: stdio servers need SLUICE_MCP_ALLOW_STDIO=1")
    if kind == "streamable_http" and not str(entry.get("url", "")).startswith(("http://", "https://")):
        raise ValueError(f"MCP server {entry['id']!r}: url must be an http(s) URL")
    if kind == "stdio" and not isinstance(entry.get("command"), str):
        raise ValueError(f"MCP server {entry['id']!r}: command is required")
    return ExternalServer(entry, settings, timeout)


def build_registry(settings: McpSettings) -> Registry:
    """ValueError naming the entry at fault when the config is wrong."""
    servers = [build_server(entry, settings) for entry in read_config(settings.config_path)]
    return Registry(settings, {server.id: server for server in servers})
