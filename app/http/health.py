"""HTTP: /healthz (the process answers) and /readyz (Postgres, Redis and Kafka answer)."""

import asyncio

from blacksheep import Response

from app.http.errors import json_response
from app.http.routing import PublicCall, Route
from ingest.broker import kafka_ready
from storage.redis.client import ping

# Long enough for a loaded loopback service, short enough for a load balancer's probe.
CHECK_TIMEOUT_SECONDS = 2.0


async def healthz(call: PublicCall) -> Response:
    return json_response(200, {"status": "ok"})


async def _check(coro) -> str:
    try:
        ok = await asyncio.wait_for(coro, CHECK_TIMEOUT_SECONDS)
        return "ok" if ok else "unavailable"
    except Exception:  # noqa: BLE001 - a failing dependency is a finding, not an error
        return "unavailable"


async def readyz(call: PublicCall) -> Response:
    services = call.services
    names = ("postgres", "redis", "kafka")
    results = await asyncio.gather(
        _check(services.pool.fetchval("SELECT 1")),
        _check(ping(services.redis)),
        _check(kafka_ready(services.config.shared.kafka_bootstrap_servers, CHECK_TIMEOUT_SECONDS)),
    )
    checks = dict(zip(names, results, strict=True))
    ready = all(r == "ok" for r in results)
    return json_response(200 if ready else 503, {"status": "ready" if ready else "unavailable", "checks": checks})


ROUTES = [
    Route("GET", "/healthz", healthz, None, "Liveness: the process answers", "Health"),
    Route("GET", "/readyz", readyz, None, "Readiness: Postgres, Redis and Kafka answer", "Health", errors=(503,)),
]
