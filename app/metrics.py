"""HTTP: /metrics — this process's counters in the Prometheus text format (no auth; keep it internal)."""

from blacksheep import Content, Response

from app.routing import Call, Route


def render(services) -> bytes:
    health = services.authenticator.health
    counters = {
        "sluice_redis_outages_total": ("Redis outages seen by this process", health.outages),
        "sluice_redis_fallback_requests_total": ("Requests authenticated and limited without Redis",
                                                 health.fallback_requests),
        "sluice_redis_down": ("1 while this process considers Redis unreachable", int(health.down_since is not None)),
    }
    lines = []
    for name, (help_text, value) in counters.items():
        kind = "gauge" if name.endswith("_down") else "counter"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return ("\n".join(lines) + "\n").encode()


async def metrics(call: Call) -> Response:
    return Response(200, None, Content(b"text/plain; version=0.0.4", render(call.services)))


ROUTES = [Route("GET", "/metrics", metrics, None, "Process counters (Prometheus text format)", "Health")]
