"""Floods of bad API keys: an unknown key is looked up once, and an address that keeps failing
gets 429 before any lookup while everyone else is served.

Lookups are counted by Postgres itself (pg_stat_user_tables on api_keys) in a database of this
module's own, which only the servers started here use. A backend reports its statistics when it
exits, so each count is read after its server has stopped and its connections are gone.
"""

import asyncio
import ipaddress
import random
import secrets
import string
import time

import asyncpg
import httpx
import pytest

from tests.conftest import Tenants, _with_database, fresh_database, running_api

FAILURE_BUDGET = 5


def made_up_key() -> str:
    return "sk_live_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def random_address() -> str:
    """An address no other run uses: failure budgets live in the Redis that concurrent runs share."""
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + random.randrange(1 << 17)))


@pytest.fixture(scope="module")
def flood_db(database_url):
    """A database of this module's own, so Postgres' scan counters see only its requests."""
    with fresh_database(_with_database(database_url, "postgres"), "sluice_test_floods") as dsn:
        yield dsn


def api_key_scans(dsn: str) -> int:
    """Scans of api_keys (index or sequential) reported by every backend of the database that has gone."""

    async def read():
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + 30
            while await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ):
                assert time.monotonic() < deadline, "the server's Postgres connections did not go"
                await asyncio.sleep(0.05)
            return await conn.fetchval(
                "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'api_keys'"
            )
        finally:
            await conn.close()

    return asyncio.run(read())


def flood_env(server_env: dict, dsn: str, failures_per_minute: int) -> dict:
    return {
        **server_env,
        "DATABASE_URL": dsn,
        "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
        "SLUICE_AUTH_FAILURES_PER_MINUTE": str(failures_per_minute),
    }


def get_workspaces(c: httpx.Client, key: str, address: str) -> httpx.Response:
    return c.get("/api/v1/workspaces", headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": address})


def test_flood_of_one_unknown_key_costs_one_lookup(flood_db, server_env, tmp_path):
    key, before = made_up_key(), api_key_scans(flood_db)
    with running_api(flood_env(server_env, flood_db, 0), tmp_path) as url, httpx.Client(base_url=url) as c:
        responses = [get_workspaces(c, key, random_address()) for _ in range(50)]
    assert {r.status_code for r in responses} == {401}
    assert all(r.json() == {"error": "unauthorized", "message": "Invalid or missing API key."} for r in responses)
    assert api_key_scans(flood_db) - before == 1


def test_address_over_its_failure_budget_gets_429_without_lookups(flood_db, server_env, tmp_path):
    address, before = random_address(), api_key_scans(flood_db)
    env = flood_env(server_env, flood_db, FAILURE_BUDGET)
    with running_api(env, tmp_path) as url, httpx.Client(base_url=url) as c:
        failed = [get_workspaces(c, made_up_key(), address) for _ in range(FAILURE_BUDGET)]
        refused = [get_workspaces(c, made_up_key(), address) for _ in range(20)]
    assert [r.status_code for r in failed] == [401] * FAILURE_BUDGET
    # Each 401 says what is left of the address's budget; the refusals say it is spent.
    assert [r.headers["x-ratelimit-remaining"] for r in failed] == [str(n) for n in range(FAILURE_BUDGET)][::-1]
    assert {r.headers["x-ratelimit-limit"] for r in failed + refused} == {str(FAILURE_BUDGET)}
    assert [r.status_code for r in refused] == [429] * 20
    assert {r.headers["x-ratelimit-remaining"] for r in refused} == {"0"}
    body = refused[-1].json()
    assert body["error"] == "rate_limit_exceeded" and body["limit"] == FAILURE_BUDGET and body["remaining"] == 0
    assert body["message"] == (
        f"Too many failed authentications from this address. Please retry after {body['retry_after']} seconds."
    )
    assert refused[-1].headers["retry-after"] == str(body["retry_after"]) and body["retry_after"] >= 1
    # One lookup per failed key and one for the attempt that found the budget spent; none after.
    assert api_key_scans(flood_db) - before == FAILURE_BUDGET + 1


def test_other_addresses_keep_their_access_while_one_is_refused(flood_db, server_env, tmp_path):
    tenants = Tenants(flood_db)
    ws = tenants.workspace()
    valid = tenants.key(ws["id"])
    flooder, other = random_address(), random_address()
    with running_api(flood_env(server_env, flood_db, FAILURE_BUDGET), tmp_path) as url, httpx.Client(base_url=url) as c:
        statuses = [get_workspaces(c, made_up_key(), flooder).status_code for _ in range(FAILURE_BUDGET + 3)]
        served = get_workspaces(c, valid, other)
        still_refused = get_workspaces(c, valid, flooder)
        also_refused = get_workspaces(c, made_up_key(), flooder)
    assert statuses == [401] * FAILURE_BUDGET + [429] * 3
    assert served.status_code == 200 and [w["id"] for w in served.json()["data"]] == [ws["id"]]
    # The refusal is per address and comes before the key is looked at: a valid key from it waits too.
    assert still_refused.status_code == 429 and still_refused.json()["error"] == "rate_limit_exceeded"
    assert also_refused.status_code == 429
