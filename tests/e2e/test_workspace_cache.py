"""Workspace rows are cached per API process: a change made anywhere is seen at once, nowhere stale."""

import time

import httpx
import pytest

from tests.conftest import running_api

# How long the second process may keep a row. Postgres announces a change at commit, typically
# within a millisecond; a change seen before a row cached at a measured moment could have expired
# was announced (however loaded the machine), one seen only later may merely have expired.
CACHE_SECONDS = 60


def name_seen(client: httpx.Client, ws_id: int, headers: dict) -> str:
    r = client.get(f"/workspaces/{ws_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]["name"]


def before_expiry(read_at: float, seen, expected) -> None:
    """Polls until seen() == expected, each asked before a row cached no earlier than `read_at`
    (monotonic, taken before any read that could have cached it) could have expired."""
    got = None
    while (asked := time.monotonic()) - read_at < CACHE_SECONDS and (got := seen()) != expected:
        time.sleep(0.01)
    assert asked - read_at < CACHE_SECONDS, (
        f"still {got!r} {CACHE_SECONDS} s after the row was cached, expected {expected!r}: the change was not announced"
    )


def wait_for_name(client, ws_id, headers, expected: str, read_at: float) -> None:
    before_expiry(read_at, lambda: name_seen(client, ws_id, headers), expected)


@pytest.fixture(scope="module")
def second_api(server_env, tmp_path_factory):
    """Another API process on the same database, caching on its own (entries live CACHE_SECONDS)."""
    env = {**server_env, "SLUICE_WORKSPACE_CACHE_SECONDS": str(CACHE_SECONDS)}
    with running_api(env, tmp_path_factory.mktemp("second-api")) as url:
        with httpx.Client(base_url=url + "/api/v1", timeout=10) as c:
            yield c


def test_a_write_through_one_process_is_read_back_by_the_other(client, second_api, tenant):
    ws, headers = tenant
    read_at = time.monotonic()
    assert name_seen(second_api, ws["id"], headers) == ws["name"]  # cached there now
    r = client.patch(f"/workspaces/{ws['id']}", json={"name": "Renamed elsewhere"}, headers=headers)
    assert r.status_code == 200
    assert name_seen(client, ws["id"], headers) == "Renamed elsewhere"  # the writer: at once
    wait_for_name(second_api, ws["id"], headers, "Renamed elsewhere", read_at)


def test_a_change_made_in_sql_is_seen_without_waiting_for_the_ttl(second_api, tenant, tenants):
    ws, headers = tenant
    read_at = time.monotonic()
    assert name_seen(second_api, ws["id"], headers) == ws["name"]
    tenants.execute("UPDATE workspaces SET name = 'Renamed in psql' WHERE id = $1", ws["id"])
    wait_for_name(second_api, ws["id"], headers, "Renamed in psql", read_at)


def test_a_deleted_workspace_is_gone_from_every_cache(client, second_api, tenants):
    account = tenants.workspace()["account_id"]
    ws = tenants.workspace(account_id=account)
    headers = {"Authorization": f"Bearer {tenants.key(tenants.workspace(account_id=account)['id'])}"}
    read_at = time.monotonic()
    assert second_api.get(f"/workspaces/{ws['id']}", headers=headers).status_code == 200
    assert client.delete(f"/workspaces/{ws['id']}", headers=headers).status_code == 204
    before_expiry(read_at, lambda: second_api.get(f"/workspaces/{ws['id']}", headers=headers).status_code, 404)


def test_a_lost_notification_connection_stops_caching_until_it_is_back(second_api, tenant, tenants):
    """While nobody listens, changes go unheard: the cache must read Postgres, then start afresh."""
    ws, headers = tenant
    read_at = time.monotonic()
    assert name_seen(second_api, ws["id"], headers) == ws["name"]
    # Cut every listening connection (the API processes' LISTEN sessions), then change the row at
    # once, possibly before the listener has reconnected: no process may serve the old name.
    tenants.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
    )
    tenants.execute("UPDATE workspaces SET name = 'Renamed while deaf' WHERE id = $1", ws["id"])
    wait_for_name(second_api, ws["id"], headers, "Renamed while deaf", read_at)
    # And it listens again: the next change is heard too (every read that could cache the row came
    # after read_at, so none of them outlives read_at + CACHE_SECONDS).
    tenants.execute("UPDATE workspaces SET name = 'Heard again' WHERE id = $1", ws["id"])
    wait_for_name(second_api, ws["id"], headers, "Heard again", read_at)
