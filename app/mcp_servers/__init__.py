"""The MCP gateway's servers: the registry (registry.py), built from a config file (catalogue.py),
built-in servers (filesystem.py, analytics.py) and external ones through the SDK (external.py).
The HTTP routes are in app/resources/mcp.py."""
