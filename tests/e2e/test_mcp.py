"""The MCP gateway over HTTP: registry listings, every error case of tools/call, the filesystem
sandbox against hostile paths, analytics scoped to the caller's workspace, and an external server
(started here with the `mcp` SDK, see serve() below) listed and called through the gateway."""

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.conftest import ROOT, _free_port, running_api
from tests.e2e.test_contract_integrations import conforms

SECRET = "top secret outside the root"
# The external server's deadline at the gateway, and a tool ten times slower: the tool's sleep
# starts after the gateway's clock, so a gateway that keeps its deadline answers 504 first however
# loaded the machine; one that waits for the tool (or misses its deadline tenfold) gets "done".
NOTES_TIMEOUT_SECONDS = 1
SLOW_TOOL_SECONDS = 10
EXTERNAL_START_SECONDS = 60
HOSTILE = [
    "../secret.txt",
    "../../secret.txt",
    "a/../../secret.txt",
    "..",
    "/etc/passwd",
    "//etc/passwd",
    "~/secret.txt",
    "C:secret.txt",
    "..\\secret.txt",
    "a\x00.txt",
    "%2e%2e/secret.txt",
    "%2e%2e%2fsecret.txt",
    "..%2fsecret.txt",
    "%252e%252e/secret.txt",
    "\uff0e\uff0e/secret.txt",
    "a/\u2025/secret.txt",
    "outlink/secret.txt",
    "filelink.txt",
    "a\nb",
]


def serve(port: int | None) -> None:
    """A small external MCP server over Streamable HTTP on `port`, or over stdio when None
    (run in a subprocess by the fixture, or by the gateway for the stdio entry)."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("test-notes", log_level="WARNING")

    @server.tool(description="Add two integers", structured_output=True)
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @server.tool(description="Echo text back", structured_output=False)
    def echo(text: str) -> str:
        return text

    @server.tool(description="Sleep, then answer")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @server.tool(description="Always fails")
    def fail() -> str:
        from mcp.server.mcpserver.exceptions import ToolError

        raise ToolError("this tool always fails")

    @server.resource("notes://{name}")
    def note(name: str) -> str:
        return f"note {name}"

    if port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=port, stateless_http=True, json_response=True)


@pytest.fixture(scope="module")
def external_mcp():
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.test_mcp", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + EXTERNAL_START_SECONDS
    # Listening is enough: GET /mcp would open an event stream that never ends.
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, f"the external MCP server exited with {process.returncode}"
            assert time.monotonic() < deadline, (
                f"the external MCP server did not listen within {EXTERNAL_START_SECONDS} s"
            )
            time.sleep(0.2)
    try:
        yield url
    finally:
        # Its server waits for requests in flight before it exits: the slow tools' sleeps.
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def mcp_env(tmp_path_factory, server_env, external_mcp):
    base = tmp_path_factory.mktemp("mcp")
    config = base / "mcp_servers.json"
    config.write_bytes(
        orjson.dumps(
            {
                "servers": [
                    {"id": "filesystem", "type": "builtin", "name": "Filesystem Server", "description": "Files"},
                    {"id": "analytics", "type": "builtin", "name": "Analytics Server", "description": "Events"},
                    {
                        "id": "notes",
                        "type": "streamable_http",
                        "url": external_mcp,
                        "name": "Notes",
                        "description": "External",
                        "timeout_seconds": NOTES_TIMEOUT_SECONDS,
                        "resource_schemes": ["notes"],
                    },
                    {
                        "id": "local",
                        "type": "stdio",
                        "command": sys.executable,
                        "args": ["-m", "tests.e2e.test_mcp", "stdio"],
                        "cwd": str(ROOT),
                        "timeout_seconds": 20,
                    },
                    {
                        "id": "gone",
                        "type": "streamable_http",
                        "url": f"http://127.0.0.1:{_free_port()}/mcp",
                        "name": "Gone",
                    },
                ]
            }
        )
    )
    (base / "secret.txt").write_text(SECRET)
    (base / "root").mkdir()
    (base / "root" / "secret.txt").write_text(SECRET)
    return {
        "base": base,
        "root": base / "root",
        "clickhouse_url": f"chdb://{base}/clickhouse",
        "env": {
            **server_env,
            "SLUICE_MCP_CONFIG": str(config),
            "SLUICE_MCP_ROOT": str(base / "root"),
            "SLUICE_MCP_TIMEOUT_SECONDS": "5",
            "SLUICE_MCP_ALLOW_STDIO": "1",
            "SLUICE_MCP_MAX_FILE_BYTES": "4096",
            "CLICKHOUSE_URL": f"chdb://{base}/clickhouse",
        },
    }


@pytest.fixture(scope="module")
def mcp(mcp_env, tmp_path_factory):
    with running_api(mcp_env["env"], tmp_path_factory.mktemp("mcp-server")) as url:
        with httpx.Client(base_url=url + "/api/v1", timeout=15) as c:
            yield c


def call(client, headers, server, tool, arguments=None):
    body = {"server": server, "tool": tool} | ({"arguments": arguments} if arguments is not None else {})
    return client.post("/mcp/tools/call", json=body, headers=headers)


def snapshot(base: Path, root: Path) -> dict:
    """Every file outside the workspace roots, with its content."""
    return {
        p: p.read_bytes()
        for p in base.rglob("*")
        if p.is_file() and not p.is_symlink() and root not in p.parents and "clickhouse" not in p.parts
    }


def test_servers_are_listed_with_tool_names(mcp, tenant):
    _, headers = tenant
    r = mcp.get("/mcp/servers", headers=headers)
    assert r.status_code == 200
    servers = {s["id"]: s for s in r.json()["data"]}
    assert servers["filesystem"]["tools"] == ["read_file", "write_file", "list_directory"]
    assert servers["filesystem"]["name"] == "Filesystem Server"
    assert set(servers["notes"]["tools"]) == {"add", "echo", "slow", "fail"}
    assert servers["gone"]["status"] == "unavailable" and servers["gone"]["tools"] == []
    assert mcp.get("/mcp/servers/analytics", headers=headers).json()["data"]["tools"] == [
        "event_counts",
        "top_pages",
        "unique_visitors",
        "feature_usage",
        "stats_query",
    ]


def test_tool_parameters_come_from_the_input_schema(mcp, tenant):
    _, headers = tenant
    tools = {t["name"]: t for t in mcp.get("/mcp/servers/filesystem/tools", headers=headers).json()["data"]}
    assert tools["read_file"]["description"] == "Read contents of a file"
    assert tools["read_file"]["parameters"]["path"]["type"] == "string"
    assert tools["read_file"]["parameters"]["path"]["required"] is True
    assert tools["list_directory"]["parameters"]["path"]["required"] is False
    external = {t["name"]: t for t in mcp.get("/mcp/servers/notes/tools", headers=headers).json()["data"]}
    assert external["add"]["parameters"]["a"]["type"] == "integer" and external["add"]["parameters"]["a"]["required"]


def test_answers_match_the_document_and_external_servers_get_an_envelope_branch(mcp, tenant):
    _, headers = tenant
    document = httpx.get(str(mcp.base_url).removesuffix("/api/v1/") + "/openapi.json").json()
    body = document["paths"]["/api/v1/mcp/tools/call"]["post"]["requestBody"]["content"]["application/json"]
    [other] = [b for b in body["schema"]["oneOf"] if "enum" in b["properties"]["server"]]
    assert other["properties"]["server"]["enum"] == ["notes", "local", "gone"]
    servers = conforms(document, "GET", "/api/v1/mcp/servers", mcp.get("/mcp/servers", headers=headers))
    assert {s["status"] for s in servers["data"]} == {"available", "unavailable"}
    tools = mcp.get("/mcp/servers/notes/tools", headers=headers)
    assert conforms(document, "GET", "/api/v1/mcp/servers/{id}/tools", tools)["meta"]["total"] == 4
    for uri in ("notes://shopping", "file:///mcp-answer.txt"):
        if uri.startswith("file:"):
            call(mcp, headers, "filesystem", "write_file", {"path": "mcp-answer.txt", "content": "x"})
        r = mcp.get("/mcp/resources/" + quote(uri, safe=""), headers=headers)
        conforms(document, "GET", "/api/v1/mcp/resources/{uri}", r)
    r = call(mcp, headers, "notes", "add", {"a": 1, "b": 2})
    conforms(document, "POST", "/api/v1/mcp/tools/call", r)


def test_unknown_server_or_tool_is_404(mcp, tenant):
    _, headers = tenant
    assert mcp.get("/mcp/servers/nope", headers=headers).status_code == 404
    assert mcp.get("/mcp/servers/nope/tools", headers=headers).status_code == 404
    r = call(mcp, headers, "nope", "read_file", {"path": "a"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = call(mcp, headers, "filesystem", "delete_everything", {})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert call(mcp, headers, "notes", "nope", {}).status_code == 404


def test_arguments_are_validated_against_the_schema_per_field(mcp, tenant):
    _, headers = tenant
    r = call(mcp, headers, "filesystem", "write_file", {"path": 7, "colour": "red"})
    assert r.status_code == 422
    assert set(r.json()["errors"]) == {"arguments.path", "arguments.content", "arguments.colour"}
    r = call(mcp, headers, "notes", "add", {"a": "one"})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"arguments.a", "arguments.b"}
    r = call(mcp, headers, "analytics", "top_pages", {"limit": 1000})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"arguments.limit"}
    r = mcp.post("/mcp/tools/call", json={"tool": "x", "arguments": []}, headers=headers)
    assert r.status_code == 422 and set(r.json()["errors"]) == {"server", "arguments"}


def test_scopes_read_and_write(mcp, tenants):
    ws = tenants.workspace()
    reader = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['mcp:read'])}"}
    assert mcp.get("/mcp/servers", headers=reader).status_code == 200
    assert call(mcp, reader, "filesystem", "list_directory", {}).status_code == 403
    writer = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['mcp:write'])}"}
    assert mcp.get("/mcp/servers", headers=writer).status_code == 403
    assert call(mcp, writer, "filesystem", "write_file", {"path": "w.txt", "content": "x"}).status_code == 200
    # Reading tools need mcp:read as well, as GET /mcp/resources does: mcp:write alone reads nothing.
    for tool, arguments in (("list_directory", {}), ("read_file", {"path": "w.txt"})):
        r = call(mcp, writer, "filesystem", tool, arguments)
        assert r.status_code == 403 and r.json()["message"] == (
            f"Insufficient permissions. The tool '{tool}' of MCP server 'filesystem' also requires scope: mcp:read"
        )
    both = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['mcp:read', 'mcp:write'])}"}
    assert call(mcp, both, "filesystem", "read_file", {"path": "w.txt"}).json()["result"]["content"] == "x"
    tools = {t["name"]: t for t in mcp.get("/mcp/servers/filesystem/tools", headers=reader).json()["data"]}
    assert tools["read_file"]["required_scopes"] == ["mcp:write", "mcp:read"]
    assert tools["write_file"]["required_scopes"] == ["mcp:write"]


def test_files_are_written_read_and_listed_per_workspace(mcp, tenant, tenants):
    ws, headers = tenant
    r = call(mcp, headers, "filesystem", "write_file", {"path": "notes/a.txt", "content": "héllo"})
    assert r.status_code == 200 and r.json()["result"] == {"path": "notes/a.txt", "size": 6, "created": True}
    r = call(mcp, headers, "filesystem", "read_file", {"path": "notes/a.txt"})
    assert r.json()["result"]["content"] == "héllo" and r.json()["result"]["size"] == 6
    entries = call(mcp, headers, "filesystem", "list_directory", {"path": "notes"}).json()["result"]["entries"]
    assert entries == [{"name": "a.txt", "kind": "file", "size": 6}]
    other = tenants.workspace()
    other_headers = {"Authorization": f"Bearer {tenants.key(other['id'])}"}
    r = call(mcp, other_headers, "filesystem", "read_file", {"path": "notes/a.txt"})
    assert r.status_code == 200 and r.json()["result"]["is_error"] is True


def test_tool_errors_are_reported_in_the_result(mcp, tenant):
    _, headers = tenant
    r = call(mcp, headers, "filesystem", "read_file", {"path": "missing.txt"})
    assert r.status_code == 200 and r.json()["result"]["is_error"] is True
    r = call(mcp, headers, "filesystem", "write_file", {"path": "big.txt", "content": "x" * 5000})
    assert r.status_code == 422  # over maxLength in the schema: SLUICE_MCP_MAX_FILE_BYTES
    r = call(mcp, headers, "notes", "fail", {})
    assert r.status_code == 200 and r.json()["result"]["is_error"] is True
    assert "always fails" in r.json()["result"]["content"]


@pytest.mark.parametrize("tool", ["read_file", "write_file", "list_directory"])
def test_hostile_paths_are_refused_and_nothing_outside_the_root_changes(mcp, mcp_env, tenant, tool):
    ws, headers = tenant
    base, root = mcp_env["base"], mcp_env["root"]
    workspace_root = root / str(ws["id"])
    workspace_root.mkdir(parents=True, exist_ok=True)
    os.symlink(base, workspace_root / "outlink")
    os.symlink(base / "secret.txt", workspace_root / "filelink.txt")
    before = snapshot(base, workspace_root)
    for path in HOSTILE:
        arguments = {"path": path} | ({"content": "pwned"} if tool == "write_file" else {})
        r = call(mcp, headers, "filesystem", tool, arguments)
        assert r.status_code == 422, (path, r.text)
        assert set(r.json()["errors"]) == {"arguments.path"} and SECRET not in r.text
    assert snapshot(base, workspace_root) == before
    assert (base / "secret.txt").read_text() == SECRET


def test_resources_resolve_by_scheme_with_slashes_url_decoded(mcp, tenant):
    _, headers = tenant
    call(mcp, headers, "filesystem", "write_file", {"path": "docs/deep/readme.md", "content": "# hi"})
    r = mcp.get("/mcp/resources/" + quote("file:///docs/deep/readme.md", safe=""), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["content"] == "# hi" and r.json()["data"]["uri"] == "file:///docs/deep/readme.md"
    r = mcp.get("/mcp/resources/file:///docs/deep/readme.md", headers=headers)
    assert r.status_code == 200 and r.json()["data"]["content"] == "# hi"
    r = mcp.get("/mcp/resources/" + quote("notes://shopping", safe=""), headers=headers)
    assert r.status_code == 200 and r.json()["data"]["content"] == "note shopping"
    assert mcp.get("/mcp/resources/file:///missing.txt", headers=headers).status_code == 404
    assert mcp.get("/mcp/resources/gopher://x/y", headers=headers).status_code == 404
    assert mcp.get("/mcp/resources/" + quote("file:///../secret.txt", safe=""), headers=headers).status_code == 422


def test_external_tool_is_called_through_the_sdk(mcp, tenant):
    _, headers = tenant
    r = call(mcp, headers, "notes", "add", {"a": 2, "b": 40})
    assert r.status_code == 200 and r.json()["result"] == {"sum": 42}
    r = call(mcp, headers, "notes", "echo", {"text": "hello"})
    assert r.status_code == 200 and r.json()["result"]["content"] == "hello"


def test_stdio_server_is_called_when_allowed(mcp, tenant):
    _, headers = tenant
    r = call(mcp, headers, "local", "add", {"a": 1, "b": 2})
    assert r.status_code == 200 and r.json()["result"] == {"sum": 3}


def test_slow_tool_times_out_with_504(mcp, tenant):
    _, headers = tenant
    body = {"server": "notes", "tool": "slow", "arguments": {"seconds": SLOW_TOOL_SECONDS}}
    started = time.monotonic()
    r = mcp.post("/mcp/tools/call", json=body, headers=headers, timeout=SLOW_TOOL_SECONDS * 2)
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert r.json() == {
        "error": "gateway_timeout",
        "message": f"MCP server 'notes' did not answer within {NOTES_TIMEOUT_SECONDS} s.",
    }
    assert NOTES_TIMEOUT_SECONDS <= elapsed < SLOW_TOOL_SECONDS, f"answered after {elapsed:.2f} s"


def test_unreachable_external_server_is_502(mcp, tenant):
    _, headers = tenant
    r = mcp.get("/mcp/servers/gone/tools", headers=headers)
    assert r.status_code == 502 and r.json()["error"] == "bad_gateway"


def test_tool_calls_are_recorded(mcp, tenants):
    ws = tenants.workspace()
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    call(mcp, headers, "filesystem", "list_directory", {})
    call(mcp, headers, "filesystem", "read_file", {"path": "../x"})
    call(mcp, headers, "notes", "slow", {"seconds": SLOW_TOOL_SECONDS})
    call(mcp, headers, "nope", "x", {})
    rows = tenants.run(
        lambda pool: pool.fetch(
            "SELECT server, tool, outcome, duration_ms, api_key_id FROM mcp_tool_calls "
            "WHERE workspace_id = $1 ORDER BY id",
            ws["id"],
        )
    )
    assert [(r["server"], r["tool"], r["outcome"]) for r in rows] == [
        ("filesystem", "list_directory", "ok"),
        ("filesystem", "read_file", "invalid_arguments"),
        ("notes", "slow", "timeout"),
    ]
    # The timeout was recorded as it happened: after the deadline (asyncio may fire a timer up to a
    # clock tick early), long before the tool would have answered.
    assert NOTES_TIMEOUT_SECONDS * 1000 - 100 <= rows[2]["duration_ms"] < SLOW_TOOL_SECONDS * 1000
    assert all(r["api_key_id"] for r in rows)


def insert_events(clickhouse_url: str, rows: list[list], usage: list[list]) -> None:
    from storage.clickhouse import client as clickhouse

    ch = clickhouse.connect(clickhouse_url)
    try:
        clickhouse.apply_schema(ch)
        ch.insert(
            "events",
            rows,
            column_names=[
                "event_id",
                "workspace_id",
                "event",
                "time",
                "received_at",
                "url",
                "host",
                "path",
                "visitor_id",
                "is_bot",
                "source",
            ],
        )
        ch.insert(
            "usage_events",
            usage,
            column_names=[
                "event_id",
                "workspace_id",
                "feature",
                "quantity",
                "metadata",
                "idempotency_key",
                "occurred_at",
            ],
        )
    finally:
        ch.close()  # chdb: one process at a time; the API opens the directory per call


def pixel(ws_id: int, event: str, path: str, visitor: str, at: datetime) -> list:
    return [
        uuid.uuid4(),
        ws_id,
        event,
        at,
        at,
        f"https://example.com{path}",
        "example.com",
        path,
        visitor,
        False,
        "json",
    ]


def test_analytics_counts_only_the_callers_workspace(mcp, mcp_env, tenants):
    mine, theirs = tenants.workspace(), tenants.workspace()
    now = datetime.now(UTC)
    rows = [
        pixel(mine["id"], "pageview", "/", "v1", now - timedelta(minutes=5)),
        pixel(mine["id"], "pageview", "/", "v2", now - timedelta(minutes=4)),
        pixel(mine["id"], "pageview", "/pricing", "v1", now - timedelta(minutes=3)),
        pixel(mine["id"], "signup", "/pricing", "v1", now - timedelta(minutes=2)),
        pixel(mine["id"], "pageview", "/", "v9", now - timedelta(days=30)),
    ]  # outside the default week
    rows += [pixel(theirs["id"], "pageview", "/secret", f"t{n}", now - timedelta(minutes=1)) for n in range(5)]
    usage = [
        [f"use_{uuid.uuid4().hex}", mine["id"], "api_calls", 3, "{}", "", now],
        [f"use_{uuid.uuid4().hex}", theirs["id"], "api_calls", 100, "{}", "", now],
    ]
    insert_events(mcp_env["clickhouse_url"], rows, usage)
    headers = {"Authorization": f"Bearer {tenants.key(mine['id'])}"}

    r = call(mcp, headers, "analytics", "event_counts", {})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["rows"] == [{"event": "pageview", "events": 3}, {"event": "signup", "events": 1}]
    pages = call(mcp, headers, "analytics", "top_pages", {"limit": 5}).json()["result"]["rows"]
    assert pages == [{"path": "/", "events": 2, "visitors": 2}, {"path": "/pricing", "events": 1, "visitors": 1}]
    visitors = call(mcp, headers, "analytics", "unique_visitors", {}).json()["result"]
    assert visitors["visitors"] == 2
    month = {"start": (now - timedelta(days=31)).isoformat()}
    assert call(mcp, headers, "analytics", "unique_visitors", month).json()["result"]["visitors"] == 3
    usage_rows = call(mcp, headers, "analytics", "feature_usage", {}).json()["result"]["rows"]
    assert usage_rows == [{"feature": "api_calls", "quantity": 3, "records": 1}]
    # No argument can name another workspace: unknown keys are refused by the schema.
    r = call(mcp, headers, "analytics", "event_counts", {"workspace_id": theirs["id"]})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"arguments.workspace_id"}


def test_analytics_rejects_bad_time_ranges(mcp, tenant):
    _, headers = tenant
    r = call(mcp, headers, "analytics", "event_counts", {"start": "yesterday"})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"arguments.start"}
    r = call(
        mcp, headers, "analytics", "event_counts", {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    )
    assert r.status_code == 422 and set(r.json()["errors"]) == {"arguments.end"}
    r = call(
        mcp, headers, "analytics", "event_counts", {"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    )
    assert r.status_code == 422 and set(r.json()["errors"]) == {"arguments.start"}


def test_analytics_usage_needs_entitlements_read(mcp, mcp_env, tenants):
    """Usage per feature is what GET /entitlements/summary shows under entitlements:read."""
    from storage.clickhouse import client as clickhouse

    ch = clickhouse.connect(mcp_env["clickhouse_url"])  # the tables, whichever test runs first
    try:
        clickhouse.apply_schema(ch)
    finally:
        ch.close()
    ws = tenants.workspace()
    mcp_only = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['mcp:*'])}"}
    r = call(mcp, mcp_only, "analytics", "feature_usage", {})
    assert r.status_code == 403 and r.json()["error"] == "access_denied"
    assert "also requires scope: entitlements:read" in r.json()["message"]
    assert call(mcp, mcp_only, "analytics", "event_counts", {}).status_code == 200
    both = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['mcp:*', 'entitlements:read'])}"}
    r = call(mcp, both, "analytics", "feature_usage", {})
    assert r.status_code == 200 and r.json()["result"]["rows"] == []


if __name__ == "__main__":
    serve(None if sys.argv[1] == "stdio" else int(sys.argv[1]))
