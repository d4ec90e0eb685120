"""The asyncpg connection pool, with jsonb decoded and encoded by orjson, and what repositories
take from it (Connection) and make of the rows a statement returns (returned)."""

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

# What a repository runs a transaction's queries on: pool.acquire() hands out a proxy of the
# connection, asyncpg.connect() the connection itself.
Connection = asyncpg.Connection | PoolConnectionProxy

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


def returned(row: asyncpg.Record | None) -> dict:
    """The row of a statement that always returns one (INSERT … RETURNING, or an UPDATE of a row
    the transaction holds), as repositories hand rows on: a dict."""
    if row is None:
        raise RuntimeError("the statement returned no row")
    return dict(row)
