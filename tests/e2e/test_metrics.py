"""/metrics through a Redis outage: every request limited without Redis is counted, and the
process sees Redis back on its own, without a request having to try it first.

A Redis server and an API server of the test's own, so stopping Redis disturbs no other test.
"""

import time

import httpx

from tests.conftest import _free_port, running_api
from tests.e2e.test_rate_limits import _start_redis


def metrics(c: httpx.Client) -> dict[str, float]:
    r = c.get("/metrics")
    assert r.status_code == 200
    lines = [line.split() for line in r.text.splitlines() if line and not line.startswith("#")]
    return {name: float(value) for name, value in lines}


def test_redis_down_clears_without_requests_and_pixel_fallbacks_are_counted(server_env, tenants, tmp_path):
    port = _free_port()
    redis_process = _start_redis(port, tmp_path)
    ws = tenants.workspace(tier="free")
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    try:
        with (
            running_api({**server_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}, tmp_path) as url,
            httpx.Client(base_url=url, timeout=10) as c,
        ):
            assert metrics(c)["sluice_redis_down"] == 0
            redis_process.terminate()
            redis_process.wait(10)
            keyed = c.get("/api/v1/workspaces", headers=headers)
            assert keyed.status_code == 200 and keyed.headers["x-ratelimit-mode"] == "local"
            tracked = c.post(
                "/api/v1/pixel/track",
                json={"event": "pageview", "url": "https://shop.example/"},
                headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"},
            )
            assert tracked.status_code < 500 and tracked.status_code != 429
            during = metrics(c)
            assert during["sluice_redis_down"] == 1 and during["sluice_redis_outages_total"] == 1
            # One API key request and one pixel request, each limited in process.
            assert during["sluice_redis_fallback_requests_total"] == 2

            redis_process = _start_redis(port, tmp_path)
            deadline = time.monotonic() + 15  # the process PINGs Redis every second while it is down
            while metrics(c)["sluice_redis_down"] != 0:
                assert time.monotonic() < deadline, "sluice_redis_down stayed 1 after Redis returned"
                time.sleep(0.1)
            after = metrics(c)
            assert after["sluice_redis_outages_total"] == 1 and after["sluice_redis_fallback_requests_total"] == 2
    finally:
        redis_process.kill()
