"""Per-key rate limits over HTTP: headers, 429, concurrency, tier changes, and Redis going away."""

import asyncio
import shutil
import socket
import subprocess
import sys
import time

import httpx

from tests.conftest import ROOT, _free_port, running_api


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_authenticated_responses_carry_rate_limit_headers(client, tenants):
    ws = tenants.workspace(tier="pro")
    headers = bearer(tenants.key(ws["id"]))
    for r in (client.get("/workspaces", headers=headers), client.get("/workspaces/999999999", headers=headers)):
        assert r.headers["x-ratelimit-limit"] == "5000"
        assert 0 <= int(r.headers["x-ratelimit-remaining"]) < 6500
        assert int(r.headers["x-ratelimit-reset"]) >= int(time.time())
        assert r.headers["ratelimit-policy"] == '"pro";q=5000;w=60'
        assert r.headers["ratelimit"].startswith('"pro";r=')
        assert "x-ratelimit-mode" not in r.headers


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
    assert r.headers["x-ratelimit-remaining"] == "0"


def test_key_tier_narrows_the_workspace_tier_but_never_raises_it(client, tenants):
    ws = tenants.workspace(tier="pro")
    r = client.get("/workspaces", headers=bearer(tenants.key(ws["id"], tier="starter")))
    assert r.headers["x-ratelimit-limit"] == "1000"
    r = client.get("/workspaces", headers=bearer(tenants.key(ws["id"], tier="agency")))
    assert r.headers["x-ratelimit-limit"] == "5000"


def test_workspace_tier_change_applies_to_its_keys_at_once(client, tenants, server_env):
    ws = tenants.workspace(tier="free")
    headers = bearer(tenants.key(ws["id"]))
    assert client.get("/workspaces", headers=headers).headers["x-ratelimit-limit"] == "60"
    command = [sys.executable, "-m", "app", "set-tier", "--workspace-id", str(ws["id"]), "--tier", "starter"]
    subprocess.run(command, cwd=ROOT, env=server_env, check=True, capture_output=True, timeout=60)
    assert client.get("/workspaces", headers=headers).headers["x-ratelimit-limit"] == "1000"


async def test_200_concurrent_requests_admit_at_most_the_bucket(api, tenants):
    ws = tenants.workspace(tier="free")
    headers = bearer(tenants.key(ws["id"]))
    async with httpx.AsyncClient(base_url=api + "/api/v1", timeout=30, limits=httpx.Limits(max_connections=200)) as c:
        started = time.monotonic()
        responses = await asyncio.gather(*[c.get(f"/workspaces/{ws['id']}", headers=headers) for _ in range(200)])
        elapsed = time.monotonic() - started
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) + len(refused) == 200
    # 60 in the bucket, plus the one per second that refilled while the burst arrived.
    assert 60 <= len(admitted) <= 60 + int(elapsed) + 1
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
                metrics = c.get("/metrics").text
                assert "sluice_redis_outages_total 1" in metrics and "sluice_redis_down 1" in metrics
                redis_process = _start_redis(port, tmp_path)
                time.sleep(1.2)  # the process retries Redis once a second
                after = c.get("/api/v1/workspaces", headers=headers)
                assert after.status_code == 200 and "x-ratelimit-mode" not in after.headers
                assert "sluice_redis_down 0" in c.get("/metrics").text
    finally:
        redis_process.kill()
