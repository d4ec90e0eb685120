"""Workspace rows are cached per API process: a change made anywhere is seen at once, nowhere stale."""

import time

import httpx
import pytest

from tests.conftest import running_api

# Postgres delivers the change notification at commit; allow the other process a moment to read it.
SEEN_WITHIN_SECONDS = 2.0


def name_seen(client: httpx.Client, ws_id: int, headers: dict) -> str:
    r = client.get(f"/workspaces/{ws_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]["name"]


def wait_for_name(client, ws_id, headers, expected: str) -> float:
    """Seconds until GET shows `expected`; fails past SEEN_WITHIN_SECONDS."""
    started = time.monotonic()
    while (seen := name_seen(client, ws_id, headers)) != expected:
        assert time.monotonic() - started < SEEN_WITHIN_SECONDS, f"still {seen!r}, expected {expected!r}"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def second_api(server_env, tmp_path_factory):
    """Another API process on the same database, caching on its own (entries live 300 s)."""
    env = {**server_env, "SLUICE_WORKSPACE_CACHE_SECONDS": "300"}
    with running_api(env, tmp_path_factory.mktemp("second-api")) as url:
        with httpx.Client(base_url=url + "/api/v1", timeout=10) as c:
            yield c


def test_a_write_through_one_process_is_read_back_by_the_other(client, second_api, tenant):
    ws, headers = tenant
    assert name_seen(second_api, ws["id"], headers) == ws["name"]  # cached there now
    r = client.patch(f"/workspaces/{ws['id']}", json={"name": "Renamed elsewhere"}, headers=headers)
    assert r.status_code == 200
    assert name_seen(client, ws["id"], headers) == "Renamed elsewhere"  # the writer: at once
    wait_for_name(second_api, ws["id"], headers, "Renamed elsewhere")


def test_a_change_made_in_sql_is_seen_without_waiting_for_the_ttl(second_api, tenant, tenants):
    ws, headers = tenant
    assert name_seen(second_api, ws["id"], headers) == ws["name"]
    tenants.execute("UPDATE workspaces SET name = 'Renamed in psql' WHERE id = $1", ws["id"])
    wait_for_name(second_api, ws["id"], headers, "Renamed in psql")


def test_a_deleted_workspace_is_gone_from_every_cache(client, second_api, tenants):
    account = tenants.workspace()["account_id"]
    ws = tenants.workspace(account_id=account)
    headers = {"Authorization": f"Bearer {tenants.key(tenants.workspace(account_id=account)['id'])}"}
    assert second_api.get(f"/workspaces/{ws['id']}", headers=headers).status_code == 200
    assert client.delete(f"/workspaces/{ws['id']}", headers=headers).status_code == 204
    started = time.monotonic()
    while second_api.get(f"/workspaces/{ws['id']}", headers=headers).status_code != 404:
        assert time.monotonic() - started < SEEN_WITHIN_SECONDS
        time.sleep(0.01)


def test_a_lost_notification_connection_stops_caching_until_it_is_back(second_api, tenant, tenants):
    """While nobody listens, changes go unheard: the cache must read Postgres, then start afresh."""
    ws, headers = tenant
    assert name_seen(second_api, ws["id"], headers) == ws["name"]
    # Cut every listening connection (the API processes' LISTEN sessions), then change the row at
    # once, possibly before the listener has reconnected: no process may serve the old name.
    tenants.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
    )
    tenants.execute("UPDATE workspaces SET name = 'Renamed while deaf' WHERE id = $1", ws["id"])
    wait_for_name(second_api, ws["id"], headers, "Renamed while deaf")
    # And it listens again: the next change is heard too.
    tenants.execute("UPDATE workspaces SET name = 'Heard again' WHERE id = $1", ws["id"])
    wait_for_name(second_api, ws["id"], headers, "Heard again")
