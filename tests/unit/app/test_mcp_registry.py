"""The MCP registry's pure parts: config checks, per-field schema errors, the spec's tool shape."""

import orjson
import pytest

from app.mcp_servers.catalogue import build_registry
from app.mcp_servers.registry import Tool, schema_errors
from app.resources.mcp import tool_view
from storage.config import Config, load

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path", "n"],
    "properties": {
        "path": {"type": "string", "description": "Where"},
        "n": {"type": "integer", "maximum": 3},
        "opts": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
    },
}


def config_for(tmp_path, servers, **extra) -> Config:
    path = tmp_path / "mcp.json"
    path.write_bytes(orjson.dumps({"servers": servers}))
    return load({"SLUICE_MCP_CONFIG": str(path), "SLUICE_MCP_ROOT": str(tmp_path), **extra})


def test_schema_errors_name_each_field():
    errors = schema_errors(SCHEMA, {"n": 9, "extra": 1, "opts": {"deep": "yes"}})
    assert set(errors) == {"arguments.path", "arguments.n", "arguments.extra", "arguments.opts.deep"}
    assert schema_errors(SCHEMA, {"path": "a", "n": 1}) == {}


def test_tool_parameters_carry_required_flags():
    view = tool_view(Tool("t", "d", SCHEMA))
    assert view["parameters"]["path"] == {"type": "string", "description": "Where", "required": True}
    assert view["parameters"]["opts"]["required"] is False


def test_default_config_has_the_two_builtins():
    registry = build_registry(Config())
    assert list(registry.servers) == ["filesystem", "analytics"]


@pytest.mark.parametrize(
    "servers",
    [
        [{"id": "x", "type": "builtin"}],
        [{"id": "a", "type": "ftp"}],
        [{"id": "a", "type": "streamable_http", "url": "file:///etc"}],
        [{"id": "a", "type": "stdio", "command": "cat"}],
        [{"id": "filesystem"}, {"id": "filesystem"}],
        [{"id": "filesystem", "timeout_seconds": 0}],
        [{"name": "no id"}],
    ],
)
def test_bad_config_is_refused_with_a_reason(tmp_path, servers):
    with pytest.raises(ValueError):
        build_registry(config_for(tmp_path, servers))


def test_stdio_needs_explicit_permission(tmp_path):
    servers = [{"id": "local", "type": "stdio", "command": "my-mcp-server"}]
    registry = build_registry(config_for(tmp_path, servers, SLUICE_MCP_ALLOW_STDIO="on"))
    assert registry.servers["local"].kind == "external"
