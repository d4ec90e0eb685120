"""redis-py's private internals, as the Lua script calls (storage/redis/scripts.py) use them.

Talks to Redis only through the connection it is given.
Contract test: tests/integration/storage/compat/test_redis_internals.py (against the local Redis).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from redis._parsers.base import AsyncBaseParser
from redis.asyncio.connection import Connection

VERIFIED = {"redis": "8.1.0"}


def reply_reader(connection: Connection) -> Callable[[], Awaitable[Any]]:
    """A coroutine function reading the connection's next reply; an error reply comes back as its
    exception (NoScriptError, ResponseError, …) instead of being raised.

    Relies on `connection._parser.read_response` (redis-py 8.1.0, hiredis parser). The
    connection's own `read_response()` formats its address and arms a timer for every reply,
    a sixth of the pipelined script path's CPU; its parser's does neither. Call it after the
    connection is connected (redis-py may swap the parser while connecting) and once per batch
    of replies. If the name goes, every script call fails with AttributeError; if error replies
    start being raised, one failing script call fails every call of its batch. redis-py declares
    the attribute as its sync-or-async BaseParser; an asyncio connection's (hiredis, RESP2, RESP3)
    is an AsyncBaseParser, checked here so that a change fails with a TypeError naming it.
    """
    parser = connection._parser
    if not isinstance(parser, AsyncBaseParser):
        raise TypeError(f"redis-py's asyncio connection holds a {type(parser).__name__}, not an AsyncBaseParser")
    return parser.read_response
