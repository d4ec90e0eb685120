"""Rate-limit headers on every answer of the API, whoever asks and whatever the path.

A request with a valid key is counted against its key's bucket, wherever it goes (a path no
route serves included); a request without one (no key, a malformed, unknown, expired or revoked
key) against its address's budget, SLUICE_AUTH_FAILURES_PER_MINUTE, and the answer says which.
"""

import ipaddress
import random
import secrets
import string
import time

import httpx
import pytest

from tests.conftest import running_api

RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
)
# The shared server's budget per address (tests/conftest.py server_env): all tests call from 127.0.0.1.
SHARED_BUDGET = 1_000_000
BUDGET = 5


def made_up_key() -> str:
    return "sk_live_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


def random_address() -> str:
    """An address no other run uses: budgets per address live in the Redis concurrent runs share."""
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.0")) + random.randrange(1 << 17)))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def remaining(r: httpx.Response) -> int:
    assert all(name in r.headers for name in RATE_LIMIT_HEADERS), dict(r.headers)
    left = int(r.headers["x-ratelimit-remaining"])
    assert 0 <= left <= int(r.headers["x-ratelimit-limit"])
    assert r.headers["ratelimit"].startswith(f'"{r.headers["ratelimit-policy"].split(";")[0][1:-1]}";r={left};t=')
    return left


def test_unmatched_paths_count_against_the_key_and_show_its_bucket(client, tenants):
    headers = bearer(tenants.key(tenants.workspace(tier="free")["id"]))
    started = time.monotonic()
    answers = [
        client.get("/no-such-thing", headers=headers),
        client.put("/workspaces", headers=headers),
        client.delete("/pixel/track", headers=headers),
        client.get("/workspaces", headers=headers),
    ]
    assert [r.status_code for r in answers] == [404, 405, 405, 200]
    refilled = time.monotonic() - started  # free refills one a second
    for made, r in enumerate(answers, 1):
        assert r.headers["x-ratelimit-limit"] == "60" and r.headers["ratelimit-policy"] == '"free";q=60;w=60'
        assert made - refilled - 1 <= 60 - remaining(r) <= made


def test_unmatched_path_with_a_spent_key_is_429(client, tenants):
    headers = bearer(tenants.key(tenants.workspace(tier="free")["id"]))
    assert {client.get("/workspaces", headers=headers).status_code for _ in range(60)} == {200}
    r = client.get("/no-such-thing", headers=headers)
    assert r.status_code == 429 and r.json()["limit"] == 60 and remaining(r) == 0
    assert r.headers["retry-after"] == str(r.json()["retry_after"])


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.get("/workspaces"),
        lambda c: c.get("/workspaces", headers=bearer(made_up_key())),
        lambda c: c.get("/workspaces", headers={"Authorization": "Basic abc"}),
        lambda c: c.get("/no-such-thing"),
        lambda c: c.patch("/workspaces"),
        lambda c: c.get("/no-such-thing", headers=bearer(made_up_key())),
    ],
    ids=["401-no-key", "401-unknown-key", "401-malformed", "404-no-key", "405-no-key", "404-unknown-key"],
)
def test_answers_without_a_valid_key_show_the_address_budget(client, send):
    r = send(client)
    assert r.status_code in (401, 404, 405)
    assert r.headers["x-ratelimit-limit"] == str(SHARED_BUDGET)
    assert r.headers["ratelimit-policy"] == f'"unauthenticated";q={SHARED_BUDGET};w=60'
    assert remaining(r) < SHARED_BUDGET


def test_requests_without_a_valid_key_spend_one_budget_per_address(server_env, tenants, tmp_path):
    valid = bearer(tenants.key(tenants.workspace()["id"]))
    env = {**server_env, "SLUICE_TRUSTED_PROXIES": "127.0.0.1", "SLUICE_AUTH_FAILURES_PER_MINUTE": str(BUDGET)}
    address, other = random_address(), random_address()
    with running_api(env, tmp_path) as url, httpx.Client(base_url=url + "/api/v1", timeout=10) as c:
        here = {"X-Forwarded-For": address}
        spent = [
            c.get("/workspaces", headers=here),
            c.get("/workspaces", headers={**here, **bearer(made_up_key())}),
            c.get("/no-such-thing", headers=here),
            c.put("/workspaces", headers={**here, **bearer(made_up_key())}),
            c.get("/workspaces", headers={**here, "Authorization": "Bearer"}),
        ]
        refused = c.get("/no-such-thing", headers=here)
        with_valid_key = c.get("/workspaces", headers={**here, **valid})
        elsewhere = c.get("/workspaces", headers={"X-Forwarded-For": other})
    assert [r.status_code for r in spent] == [401, 401, 404, 405, 401]
    assert [remaining(r) for r in spent] == [4, 3, 2, 1, 0]
    for r in spent:
        assert r.headers["x-ratelimit-limit"] == str(BUDGET)
        assert r.headers["ratelimit-policy"] == f'"unauthenticated";q={BUDGET};w=60'
    # Over the budget: 429 before anything else is judged, its body and headers stating the same budget.
    body = refused.json()
    assert refused.status_code == 429 and body["error"] == "rate_limit_exceeded"
    assert body["limit"] == int(refused.headers["x-ratelimit-limit"]) == BUDGET
    assert body["remaining"] == remaining(refused) == 0
    assert refused.headers["retry-after"] == str(body["retry_after"]) and body["retry_after"] >= 1
    assert with_valid_key.status_code == 429 and remaining(with_valid_key) == 0
    # Another address has its own budget.
    assert elsewhere.status_code == 401 and remaining(elsewhere) == BUDGET - 1
