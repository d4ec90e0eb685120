"""/metrics of real API servers: the whole count across granian's worker processes, whichever worker
answers the scrape, through a worker's death; and Redis outages, counted and cleared on their own.

Servers of the test's own: two workers started as `python -m app serve` starts them (docker-compose's
way), one worker from granian's command line (tests/conftest.py running_api), and a Redis server of
the test's own where it is stopped, so no other test is disturbed.
"""

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.http import metrics as exposition
from tests.conftest import _free_port, app_serve, running_api, workers_of
from tests.e2e.test_rate_limits import _start_redis

WORKSPACE = "/api/v1/workspaces/{id}"
POOL_SIZE = 3  # SLUICE_PG_POOL_SIZE of the two-worker server: its max connections sum to 6
DEADLINE_SECONDS = 60


def scrape(url: str) -> list:
    """The samples of one scrape, over a new connection (so any worker may answer it)."""
    r = httpx.get(url + "/metrics", timeout=10, headers={"Connection": "close"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(r.text) for s in family.samples]


def value(samples: list, name: str, **labels: str) -> float:
    """The sum of the samples named `name` that carry `labels` (absent: 0)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def counted_by_process(directory: Path, route: str) -> dict[int, float]:
    """Requests of `route` each worker process wrote to its own file (pid → count)."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        samples = [s for m in MultiProcessCollector.merge([str(path)]) for s in m.samples]
        counts[int(path.stem.split("_")[1])] = value(samples, "sluice_http_requests_total", route=route)
    return counts


@contextlib.contextmanager
def two_workers(env: dict, log_dir: Path):
    """`python -m app serve --workers 2`: (base URL, the server process, its metrics directory)."""
    env = {**env, "SLUICE_PG_POOL_SIZE": str(POOL_SIZE)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with app_serve(env, log_dir, "--workers", "2") as api:
        # granian is exec'd in place: the server's pid is the workers' parent, naming their directory.
        pid = api.process.pid
        yield api.url, api.process, exposition.base_directory() / f"{pid}-{exposition.start_time(pid)}"


def until(condition, what: str):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (result := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return result


def test_every_scrape_of_two_workers_counts_every_request_even_after_one_dies(server_env, tmp_path):
    ip = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    env = {**server_env, "SLUICE_TRUSTED_PROXIES": "127.0.0.1", "SLUICE_PIXEL_RATE_LIMIT": "1"}
    with two_workers(env, tmp_path) as (url, server, directory):
        sent = 0

        def both_workers_counted() -> bool:
            nonlocal sent
            for n in range(10):  # new connections: granian's workers share the listening socket
                r = httpx.get(f"{url}/api/v1/workspaces/{sent + n + 1}", headers={"Connection": "close"})
                assert r.status_code == 401
            sent += 10
            counts = counted_by_process(directory, WORKSPACE)
            return sent >= 50 and len([n for n in counts.values() if n]) == 2

        until(both_workers_counted, f"requests never reached both workers: {counted_by_process(directory, WORKSPACE)}")
        assert sum(counted_by_process(directory, WORKSPACE).values()) == sent

        def both_workers_scraped() -> bool:
            samples = scrape(url)
            assert value(samples, "sluice_http_requests_total", route=WORKSPACE, method="GET", status="401") == sent
            assert value(samples, "sluice_build_info", process="api") == 1
            return len([n for n in counted_by_process(directory, "/metrics").values() if n]) == 2

        until(both_workers_scraped, "the scrapes never reached both workers")

        # The pixel's per-IP budget is shared through Redis: 1 a minute, whichever worker answers.
        track = {"X-Forwarded-For": ip, "Connection": "close", "User-Agent": "Mozilla/5.0 Firefox/128.0"}
        statuses = [
            httpx.post(
                f"{url}/api/v1/pixel/track", json={"event": "pageview", "url": "https://x.example/"}, headers=track
            ).status_code
            for _ in range(4)
        ]
        refused = statuses.count(429)
        assert refused >= 3
        samples = scrape(url)
        assert value(samples, "sluice_rate_limit_refusals_total", policy="pixel") == refused
        assert value(samples, "sluice_pixel_events_dropped_total", reason="rate_limited", source="json") == refused
        assert value(samples, "sluice_postgres_pool_max_connections") == 2 * POOL_SIZE

        before = workers_of(server.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)  # granian starts another (--respawn-failed-workers)
        successor = until(
            lambda: published_pool(directory, server.pid, before), "no new worker took the dead one's place"
        )
        samples = until(lambda: scrape_if_answered(url), "no scrape answered after a worker died")
        # The dead worker's requests stay counted; its pool's gauges went with it, not summed with its successor's.
        assert value(samples, "sluice_http_requests_total", route=WORKSPACE, status="401") == sent
        assert value(samples, "sluice_postgres_pool_max_connections") == 2 * POOL_SIZE
        assert not list(directory.glob(f"gauge_live*_{victim}.db")) and successor not in before


def published_pool(directory: Path, server: int, before: set[int]) -> int | None:
    """A worker started after `before`, once it has published its pool's size; its pid."""
    for pid in workers_of(server) - before:
        path = directory / f"gauge_livesum_{pid}.db"
        if path.exists():
            samples = [s for m in MultiProcessCollector.merge([str(path)]) for s in m.samples]
            if value(samples, "sluice_postgres_pool_max_connections") == POOL_SIZE:
                return pid
    return None


def scrape_if_answered(url: str) -> list | None:
    try:
        return scrape(url)
    except httpx.TransportError:  # a connection queued on the dead worker's socket
        return None


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
            assert value(scrape(url), "sluice_redis_down") == 0
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
            during = scrape(url)
            assert value(during, "sluice_redis_down") == 1 and value(during, "sluice_redis_outages_total") == 1
            # One API key request and one pixel request, each limited in process.
            assert value(during, "sluice_redis_fallback_requests_total") == 2

            redis_process = _start_redis(port, tmp_path)
            # The process PINGs Redis every second while it is down.
            until(
                lambda: value(scrape(url), "sluice_redis_down") == 0, "sluice_redis_down stayed 1 after Redis returned"
            )
            after = scrape(url)
            assert value(after, "sluice_redis_outages_total") == 1
            assert value(after, "sluice_redis_fallback_requests_total") == 2
    finally:
        redis_process.kill()
