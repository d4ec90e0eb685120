"""Builds the MCP registry from the config file: each entry becomes a built-in or external server."""

from app.mcp_servers.analytics import AnalyticsServer
from app.mcp_servers.external import ExternalServer
from app.mcp_servers.filesystem import FilesystemServer
from app.mcp_servers.registry import Registry, read_config, server_timeout
from storage.config import Config

BUILTINS = {"filesystem": FilesystemServer, "analytics": AnalyticsServer}
EXTERNAL = ("streamable_http", "stdio")


def build_server(entry: dict, config: Config):
    kind, timeout = entry.get("type", "builtin"), server_timeout(entry, config.mcp)
    if kind == "builtin":
        builtin = BUILTINS.get(entry.get("builtin", entry["id"]))
        if builtin is None:
            raise ValueError(
                f"MCP server {entry['id']!r}: no built-in server named {entry.get('builtin', entry['id'])!r}"
            )
        return builtin(entry["id"], entry.get("name", entry["id"]), entry.get("description", ""), config, timeout)
    if kind not in EXTERNAL:
        raise ValueError(f"MCP server {entry['id']!r}: type must be builtin, {' or '.join(EXTERNAL)}")
    if kind == "stdio" and not config.mcp.allow_stdio:
        raise ValueError(f"MCP server {entry['id']!r}: stdio servers need SLUICE_MCP_ALLOW_STDIO=1")
    if kind == "streamable_http" and not str(entry.get("url", "")).startswith(("http://", "https://")):
        raise ValueError(f"MCP server {entry['id']!r}: url must be an http(s) URL")
    if kind == "stdio" and not isinstance(entry.get("command"), str):
        raise ValueError(f"MCP server {entry['id']!r}: command is required")
    return ExternalServer(entry, config.mcp, timeout)


def build_registry(config: Config) -> Registry:
    """ValueError naming the entry at fault when the registry file is wrong."""
    servers = [build_server(entry, config) for entry in read_config(config.mcp.config_path)]
    return Registry({server.id: server for server in servers})
