"""HTTP: /api/v1/mcp — the gateway to MCP servers: list servers and tools, call a tool, read a resource.

The registry (app/mcp_servers/) is built from SLUICE_MCP_CONFIG at start and kept on Services.
"""

import asyncio

from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import ApiError, GatewayTimeout, ResourceNotFound, json_response
from app.http.routing import Call, Route
from app.http.validation import Checker, present, required
from app.mcp_servers.catalogue import build_registry
from app.mcp_servers.registry import Caller, Registry, Tool, ToolFailed, call_tool
from storage.config import Config

CALL_SCOPE = "mcp:write"  # POST /tools/call's; a tool may need more (Tool.scopes)
ID_MAX = 100
TOOL_MAX = 200
URI_MAX = 2048


def create_registry(config: Config) -> Registry:
    """Built once in the app's lifespan, so a bad registry file stops the start with its reason."""
    return build_registry(config)


def registry(call: Call) -> Registry:
    return call.services.mcp


def route_value(call: Call, name: str) -> str:
    """A path parameter, URL-decoded by BlackSheep; "" (which names nothing) if the route has none."""
    return call.request.route_values.get(name) or ""


def caller(call: Call) -> Caller:
    return Caller(call.principal.workspace_id, call.principal.key_id, call.principal.scopes)


def tool_view(tool: Tool) -> dict:
    """The spec's shape: each parameter is its property schema plus `required`."""
    schema = tool.input_schema
    required = set(schema.get("required", ()))
    parameters = {name: {**prop, "required": name in required} for name, prop in schema.get("properties", {}).items()}
    return {
        "name": tool.name,
        "description": tool.description,
        "parameters": parameters,
        "input_schema": schema,
        "required_scopes": [CALL_SCOPE, *tool.scopes],
    }


async def server_view(server) -> dict:
    view = {
        "id": server.id,
        "name": server.name,
        "description": server.description,
        "type": server.kind,
        "resource_schemes": list(server.resource_schemes),
    }
    try:
        return {**view, "tools": [t.name for t in await server.list_tools()], "status": "available"}
    except ApiError:  # one unreachable external server must not hide the others
        return {**view, "tools": [], "status": "unavailable"}


async def list_mcp_servers(call: Call) -> Response:
    servers = registry(call).servers.values()
    return json_response(200, {"data": list(await asyncio.gather(*(server_view(s) for s in servers)))})


async def get_mcp_server(call: Call) -> Response:
    server = registry(call).server(route_value(call, "id"))
    return json_response(200, {"data": await server_view(server)})


async def list_mcp_server_tools(call: Call) -> Response:
    server = registry(call).server(route_value(call, "id"))
    return json_response(200, {"data": [tool_view(t) for t in await server.list_tools()]})


async def call_mcp_tool(call: Call) -> Response:
    data = await read_json_object(call.request, call.settings.max_body_bytes)
    checker = Checker(data, allowed=("server", "tool", "arguments"))
    server_id = checker.string("server", required=True, max_len=ID_MAX)
    tool = checker.string("tool", required=True, max_len=TOOL_MAX)
    arguments = checker.object("arguments")
    checker.done()
    result = await call_tool(
        registry(call),
        call.pool,
        caller(call),
        required(server_id),
        required(tool),
        arguments if present(arguments) else {},
    )
    return json_response(200, {"result": result})


async def get_mcp_resource(call: Call) -> Response:
    uri = route_value(call, "uri")
    if not uri or len(uri) > URI_MAX:
        raise ResourceNotFound()
    reg = registry(call)
    server = reg.server_for_uri(uri)
    try:
        resource = await asyncio.wait_for(server.read_resource(caller(call), uri), server.timeout_seconds)
    except ToolFailed as exc:
        raise ResourceNotFound(f"Resource not found: {exc}.") from exc
    except TimeoutError:
        raise GatewayTimeout(f"MCP server {server.id!r} did not answer within {server.timeout_seconds:g} s.") from None
    return json_response(200, {"data": resource})


CALL_BODY = {
    "type": "object",
    "required": ["server", "tool"],
    "properties": {
        "server": {"type": "string", "maxLength": ID_MAX},
        "tool": {"type": "string", "maxLength": TOOL_MAX},
        "arguments": {"type": "object", "description": "Checked against the tool's input schema"},
    },
}
BASE = "/api/v1/mcp"
ROUTES = [
    Route("GET", BASE + "/servers", list_mcp_servers, "mcp:read", "List MCP servers and their tool names", "MCP"),
    Route("GET", BASE + "/servers/{id}", get_mcp_server, "mcp:read", "Get an MCP server", "MCP", errors=(404,)),
    Route(
        "GET",
        BASE + "/servers/{id}/tools",
        list_mcp_server_tools,
        "mcp:read",
        "List a server's tools with parameters from their input schemas",
        "MCP",
        errors=(404,),
    ),
    Route(
        "POST",
        BASE + "/tools/call",
        call_mcp_tool,
        CALL_SCOPE,
        "Call a tool (422: arguments against its schema; 502/504: upstream failed or timed out)",
        "MCP",
        body=CALL_BODY,
        errors=(404, 422),
    ),
    Route(
        "GET",
        BASE + "/resources/{path:uri}",
        get_mcp_resource,
        "mcp:read",
        "Read a resource by URI (may contain slashes, URL-decoded)",
        "MCP",
        errors=(404,),
    ),
]
