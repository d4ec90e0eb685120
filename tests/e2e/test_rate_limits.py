"""Per-key rate limits over HTTP: headers, 429, concurrency, tier changes, and Redis going away."""

import asyncio
import math
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime

import httpx
import pytest

from tests.conftest import ROOT, _free_port, running_api


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# tier → (requests per minute, bucket capacity: the rate plus the burst), from the spec's table.
BUCKETS = {"free": (60, 60), "starter": (1_000, 1_200), "pro": (5_000, 6_500)}
DEADLINE_SECONDS = 60


def assert_one_model(r: httpx.Response, tier: str, capacity: int, rate: int) -> int:
    """Limit is the bucket's capacity, Remaining what is left of it, Reset and t when it is full again,
    the IETF fields say the same; returns how much of the bucket is used."""
    limit, remaining = int(r.headers["x-ratelimit-limit"]), int(r.headers["x-ratelimit-remaining"])
    assert limit == capacity and 0 <= remaining <= limit
    used = limit - remaining
    window = capacity * 60 // rate  # seconds to refill the whole bucket at the tier's rate
    assert r.headers["ratelimit-policy"] == f'"{tier}";q={capacity};w={window}'
    assert r.headers["ratelimit"].startswith(f'"{tier}";r={remaining};t=')
    until_full = int(r.headers["ratelimit"].rpartition("t=")[2])
    # Full again after refilling what is used, one request per 60/rate s (part of one may have refilled).
    assert (used - 1) * 60 / rate <= until_full <= used * 60 / rate + 1
    assert abs(int(r.headers["x-ratelimit-reset"]) - (time.time() + until_full)) <= 2
    return used


@pytest.mark.parametrize("tier", ["free", "pro"])
def test_headers_report_the_bucket_and_count_each_request(client, tenants, tier):
    rate, capacity = BUCKETS[tier]
    headers = bearer(tenants.key(tenants.workspace(tier=tier)["id"]))
    started = time.monotonic()
    for made in range(1, 6):
        r = client.get("/workspaces", headers=headers)
        assert r.status_code == 200 and "x-ratelimit-mode" not in r.headers
        used = assert_one_model(r, tier, capacity, rate)
        # Every request spends one; what refilled meanwhile (one per 60/rate s) gives some back.
        refilled = (time.monotonic() - started) * rate / 60
        assert made - refilled - 1 <= used <= made


def test_error_answers_after_admission_carry_the_same_headers(client, tenants):
    ws = tenants.workspace(tier="pro")
    headers = bearer(tenants.key(ws["id"]))
    rate, capacity = BUCKETS["pro"]
    for r in (
        client.get("/workspaces/999999999", headers=headers),
        client.get("/api-keys", headers={**headers, "X-Workspace-ID": "abc"}),
        client.post("/workspaces", json={"name": ""}, headers=headers),
    ):
        assert r.status_code in (404, 422)
        assert_one_model(r, "pro", capacity, rate)


def test_free_key_gets_60_then_429_with_spec_body(client, tenants):
    ws = tenants.workspace(tier="free")
    headers = bearer(tenants.key(ws["id"]))
    statuses = [client.get("/workspaces", headers=headers).status_code for _ in range(60)]
    assert statuses == [200] * 60
    r = client.get("/workspaces", headers=headers)
    assert r.status_code == 429
    body = r.json()
    assert body["error"] == "rate_limit_exceeded"
    assert body["limit"] == 60 and body["remaining"] == 0 and 1 <= body["retry_after"] <= 2
    assert body["reset_at"].endswith("Z")
    assert body["message"] == f"Too many requests. Please retry after {body['retry_after']} seconds."
    assert r.headers["retry-after"] == str(body["retry_after"])
    assert r.headers["x-ratelimit-remaining"] == "0" and r.headers["x-ratelimit-limit"] == "60"


async def test_a_bucket_with_burst_admits_its_capacity_and_its_429_states_it(api, tenants):
    """Starter: 1,000 a minute plus 20% burst. The 429's body and headers name the capacity, 1,200,
    and every admitted request's Remaining stays within it."""
    rate, capacity = BUCKETS["starter"]
    headers = bearer(tenants.key(tenants.workspace(tier="starter")["id"]))
    async with httpx.AsyncClient(base_url=api + "/api/v1", timeout=60, limits=httpx.Limits(max_connections=50)) as c:
        started = time.time()  # the clock Redis' TIME reads
        responses = await asyncio.gather(*[c.get("/workspaces", headers=headers) for _ in range(capacity + 150)])
        elapsed = time.time() - started
        refused = await c.get("/workspaces", headers=headers)
        while refused.status_code != 429:  # drain what refilled meanwhile, to see a refusal's body
            refused = await c.get("/workspaces", headers=headers)
    admitted = [r for r in responses if r.status_code == 200]
    # The bucket, plus one request per 60/rate s of the burst: exactly, on any machine.
    assert capacity <= len(admitted) <= capacity + math.ceil(elapsed * rate / 60)
    assert {r.status_code for r in responses} <= {200, 429}
    assert all(0 <= int(r.headers["x-ratelimit-remaining"]) < capacity for r in admitted)
    assert {r.headers["x-ratelimit-limit"] for r in responses} == {str(capacity)}
    body = refused.json()
    assert body["limit"] == int(refused.headers["x-ratelimit-limit"]) == capacity
    assert body["remaining"] == 0 and refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["retry-after"] == str(body["retry_after"])
    reset_at = datetime.fromisoformat(body["reset_at"].replace("Z", "+00:00")).timestamp()
    assert abs(reset_at - int(refused.headers["x-ratelimit-reset"])) <= 2


def test_key_tier_narrows_the_workspace_tier_but_never_raises_it(client, tenants):
    ws = tenants.workspace(tier="pro")
    r = client.get("/workspaces", headers=bearer(tenants.key(ws["id"], tier="starter")))
    assert r.headers["x-ratelimit-limit"] == "1200"
    r = client.get("/workspaces", headers=bearer(tenants.key(ws["id"], tier="agency")))
    assert r.headers["x-ratelimit-limit"] == "6500"


def test_workspace_tier_change_applies_to_its_keys_at_once(client, tenants, server_env):
    ws = tenants.workspace(tier="free")
    headers = bearer(tenants.key(ws["id"]))
    assert client.get("/workspaces", headers=headers).headers["x-ratelimit-limit"] == "60"
    command = [sys.executable, "-m", "app", "set-tier", "--workspace-id", str(ws["id"]), "--tier", "starter"]
    subprocess.run(command, cwd=ROOT, env=server_env, check=True, capture_output=True, timeout=60)
    assert client.get("/workspaces", headers=headers).headers["x-ratelimit-limit"] == "1200"


async def test_200_concurrent_requests_admit_at_most_the_bucket(api, tenants):
    ws = tenants.workspace(tier="free")
    headers = bearer(tenants.key(ws["id"]))
    async with httpx.AsyncClient(base_url=api + "/api/v1", timeout=30, limits=httpx.Limits(max_connections=200)) as c:
        started = time.time()  # the clock Redis' TIME reads
        responses = await asyncio.gather(*[c.get(f"/workspaces/{ws['id']}", headers=headers) for _ in range(200)])
        elapsed = time.time() - started
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) + len(refused) == 200
    # 60 in the bucket, plus the one per second that refilled while the burst arrived.
    assert 60 <= len(admitted) <= 60 + math.ceil(elapsed)
    remaining = [int(r.headers["x-ratelimit-remaining"]) for r in admitted]
    # Each admitted request saw its own place in the bucket: every value from 59 down to 0.
    assert set(remaining) == set(range(60))
    assert all(r.headers["x-ratelimit-remaining"] == "0" for r in refused)


def _start_redis(port: int, directory) -> subprocess.Popen:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"test redis-server did not come up on port {port}")


def test_redis_outage_falls_back_to_local_limits_and_recovers(server_env, tenants, tmp_path):
    """A dedicated Redis and API server, so stopping Redis disturbs no other test."""
    port = _free_port()
    redis_process = _start_redis(port, tmp_path)
    env = {**server_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "SLUICE_WORKERS": "2"}
    ws = tenants.workspace(tier="free")
    headers = bearer(tenants.key(ws["id"]))
    pro = bearer(tenants.key(tenants.workspace(tier="pro")["id"]))
    try:
        with running_api(env, tmp_path) as url:
            with httpx.Client(base_url=url, timeout=10) as c:
                assert "x-ratelimit-mode" not in c.get("/api/v1/workspaces", headers=headers).headers
                redis_process.terminate()
                redis_process.wait(10)
                during = [c.get("/api/v1/workspaces", headers=headers) for _ in range(40)]
                assert {r.headers["x-ratelimit-mode"] for r in during[:30]} == {"local"}
                # Free is 60/min; with 2 workers each process allows its share of 30, no burst.
                assert [r.status_code for r in during[:30]] == [200] * 30
                assert all(r.status_code == 429 for r in during[30:])
                assert during[0].headers["x-ratelimit-limit"] == "30"
                assert during[0].headers["ratelimit-policy"] == '"free";q=30;w=60'
                assert during[30].json()["limit"] == 30 and during[30].headers["x-ratelimit-remaining"] == "0"
                # The local bucket follows the same model: this process's share of the capacity, 6,500 / 2.
                local = [c.get("/api/v1/workspaces", headers=pro) for _ in range(3)]
                for made, r in enumerate(local, 1):
                    assert r.headers["x-ratelimit-mode"] == "local"
                    assert 1 <= assert_one_model(r, "pro", 3_250, 2_500) <= made
                metrics = c.get("/metrics").text
                assert "sluice_redis_outages_total 1" in metrics and "sluice_redis_down 1" in metrics
                redis_process = _start_redis(port, tmp_path)
                # The process PINGs Redis once a second while it is down: it sees Redis back unasked.
                deadline = time.monotonic() + DEADLINE_SECONDS
                while "sluice_redis_down 0" not in c.get("/metrics").text:
                    assert time.monotonic() < deadline, f"Redis back for {DEADLINE_SECONDS} s, still marked down"
                    time.sleep(0.1)
                after = c.get("/api/v1/workspaces", headers=headers)
                assert after.status_code == 200 and "x-ratelimit-mode" not in after.headers
                assert after.headers["x-ratelimit-limit"] == "60"  # the whole bucket, shared again
    finally:
        redis_process.kill()
