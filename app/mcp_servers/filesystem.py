"""Built-in MCP server `filesystem`: read_file, write_file, list_directory inside the caller's
workspace directory (storage/files.py does the sandboxing). Resources: `file:///relative/path`.
"""

import asyncio
import base64
from dataclasses import asdict
from pathlib import Path

from app.http.errors import ValidationFailed
from app.mcp_servers.registry import Caller, Tool, ToolFailed
from storage.config import Config
from storage.files import MAX_DEPTH, MAX_NAME, MAX_PATH, FileError, PathRefused, WorkspaceFiles

# Plain ASCII names, none of them "..": storage/files.py refuses more spellings than these (and
# follows no symlink), so a path the schema admits reaches the file system as it was written.
NAME = f"(?!\\.\\.(?:/|$))[A-Za-z0-9 ._,;+=@#!$&'()-]{{1,{MAX_NAME}}}"
PATH = {
    "type": "string",
    "maxLength": MAX_PATH,
    "pattern": f"^(?:{NAME}(?:/{NAME}){{0,{MAX_DEPTH - 1}}}/?)?$",
}
READS = ("mcp:read",)  # the same files GET /mcp/resources/file:… serves under mcp:read


def tools(max_file_bytes: int) -> list[Tool]:
    return [
        Tool(
            "read_file",
            "Read contents of a file",
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["path"],
                "properties": {"path": {**PATH, "minLength": 1, "description": "File path to read"}},
            },
            READS,
        ),
        Tool(
            "write_file",
            "Create or replace a file atomically (parent directories are created)",
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["path", "content"],
                "properties": {
                    "path": {**PATH, "minLength": 1, "description": "File path to write"},
                    "content": {"type": "string", "maxLength": max_file_bytes, "description": "UTF-8 text to write"},
                },
            },
        ),
        Tool(
            "list_directory",
            "List a directory's entries, sorted by name",
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"path": {**PATH, "description": "Directory path; the root when omitted"}},
            },
            READS,
        ),
    ]


def content_view(path: str, data: bytes) -> dict:
    try:
        return {"path": path, "content": data.decode("utf-8"), "encoding": "utf-8", "size": len(data)}
    except UnicodeDecodeError:
        return {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64", "size": len(data)}


class FilesystemServer:
    kind = "builtin"
    resource_schemes = ("file",)

    def __init__(self, server_id: str, name: str, description: str, config: Config, timeout: float):
        self.id, self.name, self.description = server_id, name, description
        self.timeout_seconds = timeout
        self.config = config.mcp
        self._tools = tools(self.config.max_file_bytes)

    def files(self, caller: Caller) -> WorkspaceFiles:
        root = Path(self.config.files_root) / str(caller.workspace_id)
        return WorkspaceFiles(root, self.config.max_file_bytes, self.config.max_entries)

    def known_tools(self) -> list[Tool]:
        return self._tools

    async def list_tools(self) -> list[Tool]:
        return self._tools

    async def call_tool(self, caller: Caller, name: str, arguments: dict) -> dict:
        files, path = self.files(caller), arguments.get("path", "")
        try:
            if name == "read_file":
                return content_view(path, await asyncio.to_thread(files.read, path))
            if name == "write_file":
                data = arguments["content"].encode("utf-8")
                created = await asyncio.to_thread(files.write, path, data)
                return {"path": path, "size": len(data), "created": created}
            entries, truncated = await asyncio.to_thread(files.list_dir, path)
            return {"path": path, "entries": [asdict(e) for e in entries], "truncated": truncated}
        except PathRefused as exc:
            raise ValidationFailed({"arguments.path": [f"The path is refused: {exc}."]}) from None
        except FileError as exc:
            raise ToolFailed(str(exc)) from exc

    async def read_resource(self, caller: Caller, uri: str) -> dict:
        # file:///notes/a.txt and file:notes/a.txt both name notes/a.txt under the workspace root.
        path = uri.split(":", 1)[1].removeprefix("//").lstrip("/")
        result = await self.call_tool(caller, "read_file", {"path": path})
        return {
            "uri": uri,
            "mime_type": "text/plain" if result["encoding"] == "utf-8" else "application/octet-stream",
            **{k: result[k] for k in ("content", "encoding", "size")},
        }
