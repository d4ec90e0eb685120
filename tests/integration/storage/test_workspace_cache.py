"""The workspace cache against a real Postgres: served from memory, never past a change it missed."""

import asyncio
import uuid

import pytest

from storage.errors import NotFound
from storage.postgres import workspaces
from storage.postgres.pool import create_pool
from storage.postgres.workspace_cache import WorkspaceCache

UNREACHABLE = "postgresql://sluice@127.0.0.1:1/none"


async def until(predicate, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def setup(database_url):
    pool = await create_pool(database_url, 3)
    cache = WorkspaceCache(pool, database_url, ttl_seconds=300)
    await cache.start()
    account = await workspaces.create_account(pool, "Cache Account")
    slug = f"c-{uuid.uuid4().hex[:10]}"
    ws = await workspaces.create_workspace(pool, account["id"], "Before", slug, slug, "pro", {})
    yield pool, cache, ws["id"]
    await cache.stop()
    await pool.close()


async def rename(pool, ws_id: int, name: str) -> None:
    await pool.execute("UPDATE workspaces SET name = $2 WHERE id = $1", ws_id, name)


async def test_a_second_read_comes_from_memory_and_is_a_copy(setup):
    pool, cache, ws_id = setup
    first = await cache.get(ws_id)
    first["name"] = "scribbled on by a caller"
    second = await cache.get(ws_id)
    assert second["name"] == "Before" and cache.hits == 1 and cache.misses == 1


async def test_a_committed_change_drops_the_entry(setup):
    pool, cache, ws_id = setup
    await cache.get(ws_id)
    await rename(pool, ws_id, "After")
    await until(lambda: ws_id not in cache.entries)
    assert (await cache.get(ws_id))["name"] == "After"


async def test_missing_workspaces_are_not_cached(setup):
    _pool, cache, _ws_id = setup
    for _ in range(2):
        with pytest.raises(NotFound):
            await cache.get(10**15)
    assert cache.misses == 2 and not cache.entries


async def test_while_deaf_it_reads_postgres_and_afterwards_forgets_what_it_held(setup):
    pool, cache, ws_id = setup
    await cache.get(ws_id)
    listener = cache.listener
    dsn, listener.dsn = listener.dsn, UNREACHABLE  # it cannot come back until we let it
    await pool.execute("SELECT pg_terminate_backend($1)", listener._connection.get_server_pid())
    await until(lambda: not listener.live)
    await rename(pool, ws_id, "Changed unheard")  # nobody listens: no notification reaches us
    assert (await cache.get(ws_id))["name"] == "Changed unheard"
    assert (await cache.get(ws_id))["name"] == "Changed unheard" and cache.hits == 0
    listener.dsn = dsn
    await until(lambda: listener.live, seconds=10)
    # The entry from before the outage would say "Before" for 300 s; it must be gone.
    assert (await cache.get(ws_id))["name"] == "Changed unheard"


async def test_a_read_racing_a_change_is_not_stored(setup):
    pool, cache, ws_id = setup
    original = workspaces.get_workspace

    async def slow_read(p, workspace_id):
        row = await original(p, workspace_id)  # the old row...
        await rename(pool, ws_id, "Changed mid-read")  # ...and the change lands before we store it
        await until(lambda: cache.generation > generation)
        return row

    generation = cache.generation
    workspaces.get_workspace = slow_read
    try:
        assert (await cache.get(ws_id))["name"] == "Before"  # what Postgres said when asked
    finally:
        workspaces.get_workspace = original
    assert ws_id not in cache.entries
    assert (await cache.get(ws_id))["name"] == "Changed mid-read"
