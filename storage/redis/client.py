"""The redis-py asyncio client (hiredis parser), exposing only what Sluice uses."""

import redis.asyncio as redis

# A Redis on loopback answers in well under a millisecond; past this it is not well.
SOCKET_TIMEOUT_SECONDS = 2.0
# Requests beyond this many in flight wait for a connection instead of failing: a plain
# pool raises "Too many connections", which would look like an outage.
MAX_CONNECTIONS = 64


def create_client(url: str) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=SOCKET_TIMEOUT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
    )
    return redis.Redis(connection_pool=pool)


async def close_client(client: redis.Redis) -> None:
    await client.aclose()
    await client.connection_pool.disconnect()


async def ping(client: redis.Redis) -> bool:
    return bool(await client.ping())
