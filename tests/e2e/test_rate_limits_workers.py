"""Redis away under a real multi-worker API server: README's fallback bound across processes.

README (Rate limits, "When Redis is unreachable"): each process limits locally at its share, a
bucket of `capacity / SLUICE_WORKERS` refilling at `limit / SLUICE_WORKERS`. So over any time
`elapsed`, each worker admits at most its share plus what its share refilled, and all of them
together at most the bucket plus `SLUICE_WORKERS` shares' refill. The server is started as
`python -m app serve` with SLUICE_WORKERS alone choosing its workers, and REDIS_URL pointing at
a port where nothing listens. Each request comes on a new connection, so granian's workers (which
share the listening socket) all take some; which worker answered is read from the request counters
each worker writes to a file of its own (named by its pid) in PROMETHEUS_MULTIPROC_DIR.
"""

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.access.rate_limits import tier_limits
from tests.conftest import _free_port, app_serve, workers_of

T = TypeVar("T")
WORKERS = 2
# One route per key, so each worker's counters tell the two tiers apart.
ROUTES = {"free": "/api/v1/workspaces", "starter": "/api/v1/workspaces/{id}"}
IN_FLIGHT = 16  # requests sent at once, each on a connection of its own
DEADLINE_SECONDS = 120


def answered_by_worker(directory: Path) -> dict[int, Counter]:
    """pid → Counter of (tier, status) from the requests each worker counted in its own file."""
    tiers = {route: tier for tier, route in ROUTES.items()}
    counts: dict[int, Counter] = {}
    for path in directory.glob("counter_*.db"):
        answered = counts.setdefault(int(path.stem.split("_")[1]), Counter())
        for metric in MultiProcessCollector.merge([str(path)]):
            for s in metric.samples:
                if s.name == "sluice_http_requests_total" and s.labels.get("route") in tiers:
                    answered[tiers[s.labels["route"]], int(s.labels["status"])] += int(s.value)
    return counts


def counted(directory: Path, total: int) -> dict[int, Counter] | None:
    """answered_by_worker once the workers have counted `total` requests; None before."""
    counts = answered_by_worker(directory)
    return counts if sum(sum(n.values()) for n in counts.values()) == total else None


def every_worker_refused_both(counts: dict[int, Counter], workers: set[int]) -> bool:
    return set(counts) == workers and all(counts[pid][tier, 429] for pid in workers for tier in ROUTES)


def scraped(url: str, name: str) -> float:
    r = httpx.get(url + "/metrics", timeout=10, headers={"Connection": "close"})
    return sum(s.value for f in text_string_to_metric_families(r.text) for s in f.samples if s.name == name)


def until(condition: Callable[[], T | None], what: Callable[[], str]) -> T:
    """condition()'s first answer that is not None, polled until DEADLINE_SECONDS; else fails saying what()."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (result := condition()) is None:
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)
    return result


async def flood(url: str, requests: dict[str, tuple[str, str]], metrics: Path, workers: set[int]):
    """Both keys' requests, IN_FLIGHT at a time, until every worker has refused each key once:
    (tier → its answers, the seconds from before the first request to after the last answer)."""
    responses: dict[str, list[httpx.Response]] = {tier: [] for tier in requests}
    # No keep-alive: every request opens a connection, which any worker may accept.
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        deadline = time.monotonic() + DEADLINE_SECONDS
        started = time.monotonic()  # the clock LocalLimiter reads
        while not every_worker_refused_both(answered_by_worker(metrics), workers):
            assert time.monotonic() < deadline, f"not every worker emptied both: {answered_by_worker(metrics)}"
            sent = [
                (tier, c.get(path, headers={"Authorization": f"Bearer {key}", "Connection": "close"}))
                for tier, (path, key) in requests.items()
                for _ in range(IN_FLIGHT // len(requests))
            ]
            answers = await asyncio.gather(*[request for _, request in sent])
            for (tier, _), r in zip(sent, answers, strict=True):
                responses[tier].append(r)
        return responses, time.monotonic() - started


def test_redis_down_each_worker_limits_at_its_share_and_all_together_within_the_bucket(server_env, tenants, tmp_path):
    metrics = tmp_path / "metrics"
    env = {
        **server_env,
        "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0",  # nothing listens there: Redis is down
        "SLUICE_WORKERS": str(WORKERS),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    free, starter = tenants.workspace(tier="free"), tenants.workspace(tier="starter")
    requests = {
        "free": ("/api/v1/workspaces", tenants.key(free["id"])),
        "starter": (f"/api/v1/workspaces/{starter['id']}", tenants.key(starter["id"])),
    }
    with app_serve(env, tmp_path) as api:
        url, server = api.url, api.process
        workers = workers_of(server.pid)
        assert len(workers) == WORKERS, f"SLUICE_WORKERS={WORKERS} started the workers {workers}"
        responses, elapsed = asyncio.run(flood(url, requests, metrics, workers))
        total = sum(len(rs) for rs in responses.values())
        # A worker counts a request as its answer goes out: wait until every answer is in a file.
        counts = until(
            lambda: counted(metrics, total), lambda: f"{total} answered; counted {answered_by_worker(metrics)}"
        )
        assert workers_of(server.pid) == workers, "a worker was replaced: its successor's bucket started full"
        outages = scraped(url, "sluice_redis_outages_total")

    for tier, answered in responses.items():
        limit, capacity = tier_limits(tier)
        rate, held = limit // WORKERS, capacity // WORKERS  # one worker's share
        refill = math.ceil(rate * elapsed / 60)
        for pid in workers:
            admitted = counts[pid][tier, 200]
            # It refused some, so its share was spent; it never admitted more than share + refill.
            assert held <= admitted <= held + refill, (
                f"worker {pid} admitted {admitted} {tier} requests in {elapsed:.1f} s: its share holds {held} "
                f"and refilled at most {refill}"
            )
        served = sum(r.status_code == 200 for r in answered)
        assert served == sum(counts[pid][tier, 200] for pid in workers)
        # Together: the whole bucket, and no more than every share's refill on top.
        assert capacity <= served <= capacity + WORKERS * refill
        assert {r.status_code for r in answered} == {200, 429}
        assert_answers_are_local_at_the_share(tier, answered, held, rate)
    assert {tuple(w["id"] for w in r.json()["data"]) for r in responses["free"] if r.status_code == 200} == {
        (free["id"],)
    }
    assert {r.json()["data"]["id"] for r in responses["starter"] if r.status_code == 200} == {starter["id"]}
    assert outages == WORKERS  # one outage seen by each process


def assert_answers_are_local_at_the_share(tier: str, answered: list[httpx.Response], held: int, rate: int) -> None:
    """Every answer says Redis was away and reports this process's share, in the one header model."""
    window = math.ceil(held * 60 / rate)
    for r in answered:
        assert r.headers["x-ratelimit-mode"] == "local"
        assert r.headers["x-ratelimit-limit"] == str(held)
        assert r.headers["ratelimit-policy"] == f'"{tier}";q={held};w={window}'
        assert 0 <= int(r.headers["x-ratelimit-remaining"]) < held
    refusal = next(r for r in answered if r.status_code == 429)
    body = refusal.json()
    assert body["error"] == "rate_limit_exceeded" and body["limit"] == held and body["remaining"] == 0
    assert refusal.headers["retry-after"] == str(body["retry_after"]) and body["retry_after"] >= 1
