"""External MCP servers, reached with the official `mcp` SDK client: Streamable HTTP, or stdio
when the operator allows it (SLUICE_MCP_ALLOW_STDIO: a stdio server is a command the API process
starts with its own privileges, so a config file that can name one is as powerful as a shell).

One connection per request: a gateway holds no session state between callers, and an idle
connection per server per API worker would outlive every client. Tool lists are cached briefly.
"""

import time

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from app.http.errors import BadGateway
from app.mcp_servers.registry import Caller, Tool, ToolFailed
from storage.compat import mcp_internals
from storage.config import McpConfig

SDK_GRACE_SECONDS = 5.0


def result_view(result) -> dict:
    """CallToolResult → the gateway's `result`: structured content if any, else the text."""
    if result.is_error:
        raise ToolFailed(_text(result.content) or "The tool reported an error.")
    if isinstance(result.structured_content, dict):
        return result.structured_content
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    if len(texts) == len(result.content):
        return {"content": "\n".join(texts)}
    return {"content": [block.model_dump(mode="json", exclude_none=True) for block in result.content]}


def _text(blocks) -> str:
    return "\n".join(b.text for b in blocks if getattr(b, "type", None) == "text")


class ExternalServer:
    kind = "external"

    def __init__(self, entry: dict, config: McpConfig, timeout: float):
        self.id = entry["id"]
        self.name = entry.get("name", self.id)
        self.description = entry.get("description", "")
        self.transport = entry["type"]
        self.resource_schemes = tuple(s.lower() for s in entry.get("resource_schemes", ()))
        self.timeout_seconds = timeout
        self.entry = entry
        self.cache_seconds = config.tools_cache_seconds
        self._tools: tuple[float, list[Tool]] | None = None

    async def _session(self, work):
        """Run `work(client)` on a fresh connection; any failure of the upstream is a 502."""
        http = None
        if self.transport == "stdio":
            target = StdioServerParameters(
                command=self.entry["command"],
                args=self.entry.get("args", []),
                env=self.entry.get("env"),
                cwd=self.entry.get("cwd"),
            )
        else:
            http = mcp_internals.mcp_http_client(self.entry.get("headers"))
            target = streamable_http_client(self.entry["url"], http_client=http)
        # The SDK's own read timeout stays behind the gateway's deadline, which answers 504.
        client = Client(target, read_timeout_seconds=self.timeout_seconds + SDK_GRACE_SECONDS, cache=None)
        try:
            async with client:
                return await work(client)
        except Exception as exc:  # transport, protocol and server errors alike
            raise BadGateway(f"MCP server {self.id!r} failed: {_describe(exc)}") from exc
        finally:
            if http is not None:
                await http.aclose()

    def known_tools(self) -> None:
        return None  # only the server can say, and it may be down when asked

    async def list_tools(self) -> list[Tool]:
        now = time.monotonic()
        if self._tools is not None and now - self._tools[0] < self.cache_seconds:
            return self._tools[1]
        listed = await self._session(lambda c: c.list_tools())
        tools = [Tool(t.name, t.description or "", t.input_schema) for t in listed.tools]
        self._tools = (now, tools)
        return tools

    async def call_tool(self, caller: Caller, name: str, arguments: dict) -> dict:
        result = await self._session(lambda c: c.call_tool(name, arguments))
        return result_view(result)

    async def read_resource(self, caller: Caller, uri: str) -> dict:
        result = await self._session(lambda c: c.read_resource(uri))
        if not result.contents:
            raise ToolFailed(f"{uri} has no contents")
        item = result.contents[0]
        body = {"uri": item.uri, "mime_type": item.mime_type}
        if hasattr(item, "text"):
            return {**body, "content": item.text, "encoding": "utf-8"}
        return {**body, "content": item.blob, "encoding": "base64"}


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # anyio task groups wrap the one error that mattered
    return f"{type(exc).__name__}: {exc}"[:300]
