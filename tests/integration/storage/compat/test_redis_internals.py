"""Contract of storage/compat/redis_internals.py: the reply reader on a connection of the app's own
client (storage/redis/client.py, hiredis parser) to the local Redis."""

import os
import uuid

import pytest
from redis.exceptions import NoScriptError, ResponseError

from storage.compat import redis_internals
from storage.redis.client import close_client, create_client
from storage.redis.scripts import pack_evalsha

UNKNOWN_SHA = b"0" * 40


@pytest.fixture
async def client():
    c = create_client(os.environ["REDIS_URL"])
    yield c
    await close_client(c)


async def test_replies_come_back_in_order_with_error_replies_returned_not_raised(client):
    """What storage/redis/scripts.py reads a pipelined batch with: one failing call must not
    fail its neighbours, and NOSCRIPT must be told apart so the script is loaded again."""
    key = f"compat-test:{uuid.uuid4().hex}"
    pool = client.connection_pool
    connection = await pool.get_connection()

    def command(*args) -> bytes:
        return b"".join(connection.pack_command(*args))

    try:
        await connection.send_packed_command(
            b"".join(
                [
                    command("SET", key, "7", "EX", "60"),
                    pack_evalsha(UNKNOWN_SHA, [key], []),
                    command("INCRBY", key, "nope"),
                    command("GET", key),
                ]
            ),
            check_health=False,
        )
        read = redis_internals.reply_reader(connection)
        replies = [await read() for _ in range(4)]
        # Nothing was left half-read: the connection goes on answering in order.
        await connection.send_packed_command(command("PING"), check_health=False)
        assert await read() == b"PONG"
    finally:
        await pool.release(connection)
        await client.delete(key)
    ok, noscript, not_integer, value = replies
    assert ok == b"OK" and value == b"7"
    assert isinstance(noscript, NoScriptError)
    assert isinstance(not_integer, ResponseError) and not isinstance(not_integer, NoScriptError)
