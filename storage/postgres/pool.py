"""The asyncpg connection pool, with jsonb decoded and encoded by orjson."""

import asyncpg
import orjson

# Two API workers × 10 stays well under Postgres' default max_connections of 100,
# leaving room for workers, migrations and a psql session.
DEFAULT_MAX_SIZE = 10


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(dsn: str, max_size: int = DEFAULT_MAX_SIZE) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, init=_init_connection, command_timeout=30)
