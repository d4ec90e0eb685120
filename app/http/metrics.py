"""HTTP: /metrics — this process's counters in the Prometheus text format (no auth; keep it internal)."""

from blacksheep import Content, Response

from app.http.routing import PublicCall, Route, Services

GAUGES = ("_down", "_bytes", "_pending", "_spooling")
PRODUCER_HELP = {
    "sent_kafka": "Records acknowledged by Kafka within the deadline",
    "sent_spool": "Records made durable in the on-disk spool instead",
    "replayed": "Spooled records replayed to Kafka",
    "spool_full_refusals": "Sends refused because the spool was full (answered 503)",
    "spool_bytes": "Bytes in this process's spool",
    "spool_records_pending": "Spooled records not yet replayed",
    "spooling": "1 while new records go to the spool (Kafka away or replay catching up)",
}


def render(services: Services) -> bytes:
    health = services.authenticator.health
    counters = {
        "sluice_redis_outages_total": ("Redis outages seen by this process", health.outages),
        # One RedisHealth per process, shared by the API keys' and the pixel's limiters.
        "sluice_redis_fallback_requests_total": (
            "Requests limited locally without Redis (API keys and pixel)",
            health.fallback_requests,
        ),
        "sluice_redis_down": ("1 while this process considers Redis unreachable", int(health.down_since is not None)),
    }
    counters["sluice_pixel_events_accepted_total"] = (
        "Pixel events made durable (answered 2xx)",
        services.pixel.accepted,
    )
    for key, value in services.sink.stats().items():
        counters[f"sluice_producer_{key}"] = (PRODUCER_HELP.get(key, key.replace("_", " ")), value)
    lines = []
    for name, (help_text, value) in counters.items():
        kind = "gauge" if name.endswith(GAUGES) else "counter"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return ("\n".join(lines) + "\n").encode()


async def metrics(call: PublicCall) -> Response:
    return Response(200, None, Content(b"text/plain; version=0.0.4", render(call.services)))


ROUTES = [Route("GET", "/metrics", metrics, None, "Process counters (Prometheus text format)", "Health")]
