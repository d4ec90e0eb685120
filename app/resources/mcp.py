"""HTTP: /api/v1/mcp — the gateway to MCP servers: list servers and tools, call a tool, read a resource.

The registry (app/mcp_servers/) is built from SLUICE_MCP_CONFIG at start and kept on Services.
The tools/call body is documented tool by tool where the registry knows its tools without asking
a server (built-ins): routes(config) builds that from the same configuration the lifespan reads.
"""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import ApiError, GatewayTimeout, ResourceNotFound, json_response
from app.http.listing import (
    DEFAULT_PER_PAGE,
    MAX_PAGE,
    MAX_PER_PAGE,
    base_url,
    page_answer,
    page_links,
    page_meta,
)
from app.http.routing import Call, Route
from app.http.shapes import Choice, Errors, Field, Free, Integer, List, Nullable, Object, Query, Text, response
from app.mcp_servers.catalogue import build_registry
from app.mcp_servers.registry import Caller, Registry, Tool, ToolFailed, call_tool, schema_errors
from storage.config import Config

CALL_SCOPE = "mcp:write"  # POST /tools/call's; a tool may need more (Tool.scopes)
ID_MAX = 100
TOOL_MAX = 200
URI_MAX = 2048
COUNT_MAX = 2**63 - 1
SERVER_STATUSES = ("available", "unavailable")


class ToolCall(Field):
    """The tools/call body. Read as server, tool and an arguments object; the registry then checks
    the arguments against the tool's input schema (422 arguments.<field>). Documented as oneOf one
    branch per tool the registry knows at start, with that schema as `arguments`, and one for the
    servers whose tools only the server itself can list."""

    ENVELOPE = Object(
        {
            "server": Text(ID_MAX, description="An MCP server id (GET /mcp/servers)"),
            "tool": Text(TOOL_MAX, description="One of the server's tools (GET /mcp/servers/{id}/tools)"),
            "arguments": Free(description="Checked against the tool's input schema; {} when absent"),
        },
        required=("server", "tool"),
    )

    def __init__(self, known: Mapping[str, Sequence[Tool]] | None = None, others: Sequence[str] = ()):
        self.known, self.others = known, tuple(others)

    def schema(self) -> dict[str, Any]:
        if self.known is None:
            return self.ENVELOPE.schema()
        branches = [tool_branch(server, tool) for server, tools in self.known.items() for tool in tools]
        if self.others:
            other = self.ENVELOPE.schema()
            other["properties"] = {**other["properties"], "server": {"type": "string", "enum": list(self.others)}}
            branches.append(other)
        return {"oneOf": branches}

    def read(self, value: Any, name: str, errors: Errors) -> Any:
        return self.ENVELOPE.read(value, name, errors)


def tool_branch(server: str, tool: Tool) -> dict[str, Any]:
    """One tool's call: `arguments` is required when {} (its absence) does not satisfy the schema."""
    required = ["server", "tool"] + (["arguments"] if schema_errors(tool.input_schema, {}) else [])
    return {
        "type": "object",
        "properties": {
            "server": {"type": "string", "const": server},
            "tool": {"type": "string", "const": tool.name},
            "arguments": tool.input_schema,
        },
        "required": required,
        "additionalProperties": False,
        "description": tool.description,
    }


def call_body(config: Config | None) -> ToolCall:
    """The body for this configuration's registry; without one (or with one the lifespan will
    refuse, reporting why), only the envelope."""
    if config is None:
        return ToolCall()
    try:
        registry = build_registry(config)
    except ValueError:
        return ToolCall()
    known = {s.id: tools for s in registry.servers.values() if (tools := s.known_tools()) is not None}
    return ToolCall(known, [s.id for s in registry.servers.values() if s.id not in known])


PAGE_QUERY = Query(
    {
        "page": Integer(1, MAX_PAGE, description="Page number; default 1"),
        "per_page": Integer(1, MAX_PER_PAGE, description=f"Items per page; default {DEFAULT_PER_PAGE}"),
    }
)


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


def page_of(call: Call) -> tuple[int, int]:
    """(page, per_page) of a list the registry holds in memory, as list endpoints read them."""
    query = PAGE_QUERY.parse(call.request)
    return query.get("page", 1), query.get("per_page", DEFAULT_PER_PAGE)


def page(call: Call, page_number: int, per_page: int, items: list, total: int) -> dict:
    meta = page_meta(page_number, per_page, total, len(items))
    links = page_links(
        base_url(call.request, call.settings.public_url), call.request.query, page_number, meta["last_page"]
    )
    return {"data": items, "meta": meta, "links": links}


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
    page_number, per_page = page_of(call)
    servers = list(registry(call).servers.values())
    shown = servers[(page_number - 1) * per_page : page_number * per_page]
    views = list(await asyncio.gather(*(server_view(s) for s in shown)))  # only this page's are asked
    return json_response(200, page(call, page_number, per_page, views, len(servers)))


async def get_mcp_server(call: Call) -> Response:
    server = registry(call).server(route_value(call, "id"))
    return json_response(200, {"data": await server_view(server)})


async def list_mcp_server_tools(call: Call) -> Response:
    page_number, per_page = page_of(call)
    tools = await registry(call).server(route_value(call, "id")).list_tools()
    shown = tools[(page_number - 1) * per_page : page_number * per_page]
    return json_response(200, page(call, page_number, per_page, [tool_view(t) for t in shown], len(tools)))


async def call_mcp_tool(call: Call) -> Response:
    body = ToolCall.ENVELOPE.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    result = await call_tool(
        registry(call), call.pool, caller(call), body["server"], body["tool"], body.get("arguments", {})
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


# Answers.
TEXT = Free("string")
NAMES = List(TEXT, COUNT_MAX, min_items=0)
SERVER = {
    "id": TEXT,
    "name": TEXT,
    "description": TEXT,
    "type": Choice(("builtin", "external")),
    "resource_schemes": NAMES,
    "tools": NAMES,
    "status": Choice(SERVER_STATUSES, description="unavailable: an external server that did not list its tools"),
}
TOOL = {
    "name": TEXT,
    "description": TEXT,
    "parameters": Free(description="Each parameter's property schema, with `required`"),
    "input_schema": Free(description="The tool's input schema (JSON Schema)"),
    "required_scopes": NAMES,
}
RESOURCE = Object(
    {
        "uri": TEXT,
        "mime_type": Nullable(TEXT),
        "content": TEXT,
        "encoding": Choice(("utf-8", "base64")),
        "size": Integer(0, COUNT_MAX),
    },
    required=("uri", "mime_type", "content", "encoding"),
)
BASE = "/api/v1/mcp"


def routes(config: Config | None = None) -> list[Route]:
    """The gateway's routes; with the configuration, tools/call documents each built-in tool."""
    return [
        Route(
            "GET",
            BASE + "/servers",
            list_mcp_servers,
            "mcp:read",
            "List MCP servers and their tool names",
            "MCP",
            query=PAGE_QUERY,
            answer=page_answer(response(SERVER, required=())),
        ),
        Route(
            "GET",
            BASE + "/servers/{id}",
            get_mcp_server,
            "mcp:read",
            "Get an MCP server",
            "MCP",
            answer=response({"data": Object(SERVER, required=tuple(SERVER))}),
            errors=(404,),
        ),
        Route(
            "GET",
            BASE + "/servers/{id}/tools",
            list_mcp_server_tools,
            "mcp:read",
            "List a server's tools with parameters from their input schemas (502/504: an external server "
            "failed or timed out)",
            "MCP",
            query=PAGE_QUERY,
            answer=page_answer(response(TOOL, required=())),
            errors=(404, 502, 504),
        ),
        Route(
            "POST",
            BASE + "/tools/call",
            call_mcp_tool,
            CALL_SCOPE,
            "Call a tool (404: no such server or tool; 422: arguments against its schema, and what no schema "
            "states: a filesystem path that is a symlink, an analytics range whose end is not after its start "
            "or that spans more than 366 days; 502/504: upstream failed or timed out)",
            "MCP",
            body=call_body(config),
            answer=response({"result": Free(description="The tool's result; is_error: true when the tool failed")}),
            errors=(404, 502, 504),
        ),
        Route(
            "GET",
            BASE + "/resources/{path:uri}",
            get_mcp_resource,
            "mcp:read",
            "Read a resource by URI (may contain slashes, URL-decoded; 422: a file: path that could leave "
            "the workspace's root)",
            "MCP",
            answer=response({"data": RESOURCE}),
            errors=(404, 422, 502, 504),
        ),
    ]
