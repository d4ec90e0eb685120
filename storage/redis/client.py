"""The redis-py asyncio client (hiredis parser), exposing only what Sluice uses."""

import redis.asyncio as redis

# A Redis on loopback answers in well under a millisecond; past this it is not well.
SOCKET_TIMEOUT_SECONDS = 2.0


def create_client(url: str) -> redis.Redis:
    return redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS)


async def ping(client: redis.Redis) -> bool:
    return bool(await client.ping())
