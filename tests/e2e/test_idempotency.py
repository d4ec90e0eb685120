"""Idempotency-Key over HTTP: replays, mismatches, concurrency, key scoping, expiry, Redis away."""

import asyncio
import os
import time
import uuid

import httpx
import pytest
import redis as redis_sync

from storage.redis.client import create_client
from storage.redis.idempotency import IdempotencyStore, StoredResponse, record_key
from tests.conftest import _free_port, running_api

# A record kept this long (SLUICE_IDEMPOTENCY_TTL_SECONDS) is repeated until it has expired,
# which may take this long to show on a loaded machine.
IDEMPOTENCY_TTL_SECONDS = 3
EXPIRY_DEADLINE_SECONDS = 60


def with_key(headers: dict, key: str | None = None) -> dict:
    return {**headers, "Idempotency-Key": str(uuid.uuid4()) if key is None else key}


def secret_in_redis(secret: str) -> bool:
    client = redis_sync.from_url(os.environ["REDIS_URL"])
    try:
        return any(secret.encode() in b"".join(client.hgetall(k).values()) for k in client.scan_iter("sluice:idem:*"))
    finally:
        client.close()


def count_keys(tenants, workspace_id: int, name: str) -> int:
    return tenants.fetchval("SELECT count(*) FROM api_keys WHERE workspace_id = $1 AND name = $2", workspace_id, name)


def count_workspaces(tenants, account_id: int, name: str) -> int:
    return tenants.fetchval("SELECT count(*) FROM workspaces WHERE account_id = $1 AND name = $2", account_id, name)


def assert_mismatch(r: httpx.Response) -> None:
    """A key reused for another request conflicts with what is stored: 409, never 422 (the request
    itself is valid), with no Retry-After (retrying with this key never helps)."""
    assert r.status_code == 409
    assert r.json() == {
        "error": "idempotency_key_reused",
        "message": "This Idempotency-Key was used with a different request (method, path or body); use a new key.",
    }
    assert "retry-after" not in r.headers and "idempotent-replayed" not in r.headers


def test_repeat_replays_status_body_and_creates_one_row(client, tenants, tenant):
    ws, headers = tenant
    headers = with_key(headers)
    first = client.post("/api-keys", json={"name": "ci"}, headers=headers)
    second = client.post("/api-keys", json={"name": "ci"}, headers=headers)
    assert first.status_code == second.status_code == 201
    replayed, original = second.json()["data"], first.json()["data"]
    # The same key row; its secret is not kept in Redis, so the replay redacts it.
    assert original["key"].startswith("sk_live_") and replayed["key"] is None and replayed["secret_redacted"]
    assert {k: v for k, v in replayed.items() if k not in ("key", "secret_redacted")} == {
        k: v for k, v in original.items() if k != "key"
    }
    assert not secret_in_redis(original["key"])
    assert second.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert "x-ratelimit-remaining" in second.headers
    assert count_keys(tenants, ws["id"], "ci") == 1


def test_repeat_delete_replays_204(client, tenants, tenant):
    ws, headers = tenant
    tenants.key(ws["id"])
    victim = tenants.fetchval("SELECT max(id) FROM api_keys WHERE workspace_id = $1", ws["id"])
    headers = with_key(headers)
    first = client.delete(f"/api-keys/{victim}", headers=headers)
    second = client.delete(f"/api-keys/{victim}", headers=headers)
    assert first.status_code == second.status_code == 204
    assert second.headers["idempotent-replayed"] == "true" and second.content == b""


def test_same_key_with_another_body_is_409(client, tenants, tenant):
    ws, headers = tenant
    headers = with_key(headers)
    assert client.post("/workspaces", json={"name": "Idem A"}, headers=headers).status_code == 201
    assert_mismatch(client.post("/workspaces", json={"name": "Idem B"}, headers=headers))
    assert count_workspaces(tenants, ws["account_id"], "Idem B") == 0


def test_same_key_with_another_path_query_or_method_is_409(client, tenant):
    ws, headers = tenant
    headers = with_key(headers)
    assert client.post("/workspaces", json={"name": "Idem path"}, headers=headers).status_code == 201
    assert_mismatch(client.post("/api-keys", json={"name": "Idem path"}, headers=headers))
    assert_mismatch(client.post("/workspaces?x=1", json={"name": "Idem path"}, headers=headers))
    assert_mismatch(client.patch(f"/workspaces/{ws['id']}", json={"name": "Idem path"}, headers=headers))


async def test_concurrent_duplicates_run_once(api, tenants, tenant):
    ws, headers = tenant
    headers = with_key(headers)
    async with httpx.AsyncClient(base_url=api + "/api/v1", timeout=30) as c:
        responses = await asyncio.gather(
            *[c.post("/workspaces", json={"name": "Idem race"}, headers=headers) for _ in range(20)]
        )
    ran = [r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    busy = [r for r in responses if r.status_code == 409]
    assert len(ran) == 1 and len(ran) + len(replayed) + len(busy) == 20
    assert all(r.content == ran[0].content for r in replayed)
    assert all(r.json()["error"] == "conflict" and r.headers["retry-after"] == "1" for r in busy)
    assert count_workspaces(tenants, ws["account_id"], "Idem race") == 1


def test_validation_error_is_kept_and_replayed(client, tenant):
    _, headers = tenant
    headers = with_key(headers)
    first = client.post("/workspaces", json={"name": "x", "colour": "red"}, headers=headers)
    second = client.post("/workspaces", json={"name": "x", "colour": "red"}, headers=headers)
    assert first.status_code == second.status_code == 422
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"


def test_two_api_keys_use_the_same_idempotency_key_independently(client, tenants):
    ws = tenants.workspace()
    key = str(uuid.uuid4())
    for secret in (tenants.key(ws["id"]), tenants.key(ws["id"])):
        headers = with_key({"Authorization": f"Bearer {secret}"}, key)
        r = client.post("/workspaces", json={"name": "Idem twin"}, headers=headers)
        assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert count_workspaces(tenants, ws["account_id"], "Idem twin") == 2


# Only what httpx sends and granian passes on (DEL and spaces-only never reach the app);
# tests/unit/app/test_idempotency_keys.py covers the rest.
@pytest.mark.parametrize("bad", ["", "x" * 256, "a\tb", "a b", b"\xc3\xa9"])
def test_invalid_idempotency_key_is_422_and_runs_nothing(client, tenants, tenant, bad):
    ws, headers = tenant
    r = client.post("/workspaces", json={"name": "Idem invalid"}, headers=with_key(headers, bad))
    assert r.status_code == 422
    assert list(r.json()["errors"]) == ["Idempotency-Key"]
    assert count_workspaces(tenants, ws["account_id"], "Idem invalid") == 0


def test_longest_key_is_accepted_and_get_is_never_affected(client, tenant):
    ws, headers = tenant
    longest = with_key(headers, "k" * 255)
    assert client.post("/workspaces", json={"name": "Idem long"}, headers=longest).status_code == 201
    for _ in range(2):
        r = client.get(f"/workspaces/{ws['id']}", headers=longest)
        assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert client.get("/workspaces", headers=with_key(headers, "")).status_code == 200


def test_too_large_body_is_413_and_leaves_the_key_unused(client, tenant):
    _, headers = tenant
    headers = with_key(headers)
    big = client.post("/workspaces", json={"name": "x" * 70_000}, headers=headers)
    assert big.status_code == 413
    r = client.post("/workspaces", json={"name": "Idem after 413"}, headers=headers)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


def test_repeat_after_the_ttl_runs_again(server_env, tenants, tmp_path):
    """Repeated until it runs again. The record's TTL starts when the first request completes,
    after it was sent: so every repeat answered within TTL of that moment is a replay, and the one
    that runs again is answered at least TTL after it (Redis keeps whole milliseconds)."""
    ws = tenants.workspace()
    headers = with_key({"Authorization": f"Bearer {tenants.key(ws['id'])}"})
    env = {**server_env, "SLUICE_IDEMPOTENCY_TTL_SECONDS": str(IDEMPOTENCY_TTL_SECONDS)}
    with running_api(env, tmp_path) as url, httpx.Client(base_url=url + "/api/v1", timeout=10) as c:
        sent = time.monotonic()
        first = c.post("/workspaces", json={"name": "Idem ttl"}, headers=headers)
        assert first.status_code == 201, first.text
        expires = sent + IDEMPOTENCY_TTL_SECONDS - 0.001
        replays, deadline = 0, time.monotonic() + EXPIRY_DEADLINE_SECONDS
        while True:
            again = c.post("/workspaces", json={"name": "Idem ttl"}, headers=headers)
            answered = time.monotonic()
            if "idempotent-replayed" not in again.headers:
                break
            replays += 1
            assert again.status_code == 201 and again.json() == first.json()
            assert answered < deadline, (
                f"still replayed {EXPIRY_DEADLINE_SECONDS} s later (TTL {IDEMPOTENCY_TTL_SECONDS} s)"
            )
            time.sleep(0.1)
    assert answered >= expires, f"ran again {expires - answered:.3f} s before the record expired ({replays} replays)"
    assert again.status_code == 201 and again.json()["data"]["id"] != first.json()["data"]["id"]
    assert count_workspaces(tenants, ws["account_id"], "Idem ttl") == 2


def test_redis_unavailable_refuses_keyed_requests_with_503(server_env, tenants, tmp_path):
    """Nothing listens on REDIS_URL: keys authenticate from Postgres, keyed writes fail closed."""
    ws = tenants.workspace()
    auth = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    with running_api({**server_env, "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}, tmp_path) as url:
        with httpx.Client(base_url=url + "/api/v1", timeout=10) as c:
            refused = c.post("/workspaces", json={"name": "Idem no redis"}, headers=with_key(auth))
            unkeyed = c.post("/workspaces", json={"name": "Idem plain"}, headers=auth)
    assert refused.status_code == 503 and refused.json()["error"] == "service_unavailable"
    assert refused.headers["retry-after"]
    assert count_workspaces(tenants, ws["account_id"], "Idem no redis") == 0
    assert unkeyed.status_code == 201


# The store against the real Redis: a request whose record was taken over cannot touch it.


@pytest.fixture
async def store():
    client = create_client(os.environ["REDIS_URL"])
    yield IdempotencyStore(client)
    await client.aclose()


async def test_store_ignores_complete_and_abandon_from_a_stale_token(store):
    key = record_key(0, uuid.uuid4().bytes)
    first = await store.begin(key, "f1")
    assert first.outcome == "run"
    assert not await store.abandon(key, "not-the-token")
    assert not await store.complete(key, "not-the-token", StoredResponse(201, b"", b""), 60)
    assert (await store.begin(key, "f1")).outcome == "in_progress"
    assert await store.complete(key, first.token, StoredResponse(201, b"application/json", b'{"a":1}'), 60)
    assert not await store.abandon(key, first.token)  # completed records stay
    replay = await store.begin(key, "f1")
    assert replay.outcome == "replay" and replay.stored == StoredResponse(201, b"application/json", b'{"a":1}')
    assert (await store.begin(key, "f2")).outcome == "mismatch"
    await store.client.delete(key)


async def test_store_abandon_frees_the_key_and_in_progress_expires(store):
    key = record_key(0, uuid.uuid4().bytes)
    first = await store.begin(key, "f1")
    assert await store.abandon(key, first.token)
    assert (await store.begin(key, "f1")).outcome == "run"
    assert 0 < await store.client.pttl(key) <= 60_000  # a crashed worker blocks the key a minute at most
    await store.client.delete(key)
