"""Lua scripts loaded once and called with EVALSHA; reloaded when Redis answers NOSCRIPT."""

from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import NoScriptError

HERE = Path(__file__).parent


class Script:
    """One script; `parts` are .lua files beside this module, joined in order (shared code first)."""

    def __init__(self, client: redis.Redis, *parts: str):
        self.client = client
        self.source = "\n".join((HERE / part).read_text() for part in parts)
        self.sha: str | None = None

    async def __call__(self, keys: list, args: list):
        if self.sha is None:
            self.sha = await self.client.script_load(self.source)
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted or SCRIPT FLUSH ran: load again, once.
            self.sha = await self.client.script_load(self.source)
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
