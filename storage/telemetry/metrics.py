"""Prometheus metrics shared by every process: the build's identity, and the /metrics server of the
processes that have no HTTP server of their own (the ingest worker, the webhook dispatcher).

Names follow Prometheus' conventions (README, Operating Sluice, lists each): `sluice_` prefix,
`_total` counters, `_seconds` histograms, base units, labels with a bounded set of values only —
never a URL, key, workspace id or address. The API's processes report through prometheus_client's
multiprocess mode (app/http/metrics.py); the others through the default registry served here.
"""

import logging
import subprocess
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from storage.compat import prometheus_client_internals as internals
from storage.config import listen_address

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


@cache
def build() -> tuple[str, str]:
    """(version, commit): the package's version and the checkout's short commit ("unknown" outside one)."""
    try:
        version = metadata.version("sluice")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return version, commit or "unknown"


def build_info(process: str, registry: CollectorRegistry | None = REGISTRY) -> Gauge:
    """`sluice_build_info{version, commit, process} 1` in `registry`."""
    gauge = Gauge(
        "sluice_build_info",
        "Always 1: the running build's version and commit, and which Sluice process this is",
        ["version", "commit", "process"],
        registry=registry,
        multiprocess_mode="max",
    )
    gauge.labels(*build(), process).set(1)
    return gauge


def serve(host: str, port: int, process: str) -> int:
    """Serve the default registry's /metrics on host:port (0: any free port) in a thread; the bound port."""
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    log.info("%s metrics on http://%s:%d/metrics", process, host, bound)
    return int(bound)


def start(process: str, setting: str, address: str) -> None:
    """sluice_build_info for `process`, and /metrics on `address` (the value of `setting`) unless it is
    `off`; a port another process holds ends this one with a line saying what to do."""
    build_info(process)
    listen = listen_address(address)
    if listen is None:
        return
    try:
        serve(*listen, process)
    except OSError as exc:
        raise SystemExit(
            f"{setting}={address}: cannot listen there ({exc.strerror or exc}); another process "
            f"(another {process}?) uses the port: give each {process} its own, or `off`"
        ) from None


# -- the API's processes: prometheus_client's multiprocess mode ------------------------------------


def use_directory(directory: Path) -> None:
    """Metrics created from now on in this process (and its forks) keep their values in files of
    `directory`, which a scrape in any process of the server sums (app/http/metrics.py chooses it).

    prometheus_client picks its value class when it is first imported, from PROMETHEUS_MULTIPROC_DIR;
    granian's workers import it before the application factory can set that variable, so the class
    is set here (the module attribute every metric reads at creation), to one that writes
    prometheus_client's files with less work per write (storage/compat/prometheus_client_internals.py).
    """
    internals.install_mmap_values(directory)


def exposition(directory: Path) -> bytes:
    """The text format of every process's metrics in `directory`, summed as each one's mode says."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def forget_process(directory: Path, pid: int) -> None:
    """Drop a dead process's live gauges (its counters stay: a total never goes down)."""
    mark_process_dead(pid, str(directory))


# Request durations: a pixel event takes ~1 ms, a Stats API query up to its 10 s limit.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Kafka acknowledgements: ~1-5 ms on a healthy cluster, SLUICE_KAFKA_ACK_DEADLINE_MS (1.5 s) at most.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# How the API's gauges add up over its processes; live: a dead process's value is dropped.
LiveMode = Literal["livesum", "livemax"]
# Methods a route answers; anything else a client sends is counted as "other" (bounded labels).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteMetrics:
    """One route's request counter and duration histogram, each (method, status)'s series looked
    up once: a request then costs one counter increment and one histogram observation, three
    writes (storage/compat/prometheus_client_internals.py)."""

    __slots__ = ("route", "_requests", "_durations", "_series")

    def __init__(self, route: str, requests: Counter, durations: Histogram):
        self.route, self._requests, self._durations = route, requests, durations
        self._series: dict[tuple[str, int], tuple[Callable[[float], None], internals.Timing]] = {}

    def observe(self, method: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "other"  # whatever a client sends, the label's values stay few
        series = self._series.get((method, status))
        if series is None:
            series = (
                internals.counting(self._requests.labels(self.route, method, str(status))),
                internals.timing(self._durations.labels(self.route, method)),
            )
            self._series[(method, status)] = series
        series[0](1)
        series[1].observe(seconds)


class ApiMetrics:
    """The API process's metrics (README, Operating Sluice): one per process, made after
    use_directory(); handed to what observes them (the request middleware, the pixel, the
    producer, the Redis health). `registry` None: not registered anywhere, as multiprocess mode
    reads the files; a test gives a registry of its own to read the values back."""

    def __init__(self, registry: CollectorRegistry | None = None):
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: LiveMode = "livesum") -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        self.requests = counter("sluice_http_requests", "HTTP requests answered", ("route", "method", "status"))
        self.durations = Histogram(
            "sluice_http_request_duration_seconds",
            "Time from a request's arrival in the application to its answer",
            ("route", "method"),
            registry=registry,
            buckets=HTTP_BUCKETS,
        )
        self.accepted = counter("sluice_pixel_events_accepted", "Pixel events made durable", ("source",))
        self.dropped = counter("sluice_pixel_events_dropped", "Pixel events not kept", ("reason", "source"))
        self.refusals = counter("sluice_rate_limit_refusals", "Requests refused with 429", ("policy",))
        self.redis_down = gauge(
            "sluice_redis_down", "1 while a process limits locally, Redis unreachable", mode="livemax"
        )
        self.redis_outages = counter("sluice_redis_outages", "Redis outages seen (one per process and outage)")
        self.redis_fallbacks = counter("sluice_redis_fallback_requests", "Requests rate limited locally without Redis")
        self.inflight = gauge("sluice_producer_inflight_records", "Records handed to the producer, not yet durable")
        self.ack_durations = Histogram(
            "sluice_producer_ack_duration_seconds",
            "Time from handing records to Kafka to their acknowledgement",
            registry=registry,
            buckets=ACK_BUCKETS,
        )
        self.records = counter("sluice_producer_records", "Records made durable", ("destination",))
        self.spool_bytes = gauge("sluice_spool_bytes", "Bytes in the on-disk spools")
        self.spool_pending = gauge("sluice_spool_records_pending", "Spooled records not yet replayed to Kafka")
        self.replayed = counter("sluice_spool_replayed", "Spooled records replayed to Kafka")
        self.spool_full = counter("sluice_spool_full_refusals", "Sends refused because the spool was full (503)")
        self.pg_connections = gauge("sluice_postgres_pool_connections", "Postgres pool connections", ("state",))
        self.pg_max = gauge("sluice_postgres_pool_max_connections", "Postgres pool size limit")
        self.redis_connections = gauge("sluice_redis_pool_connections", "Redis pool connections", ("state",))
        self.build = build_info("api", registry)
        # Series known up front start at 0, so that a rate over them sees their first increase.
        self._accepted = {s: internals.counting(self.accepted.labels(s)) for s in ("json", "beacon", "gif", "batch")}
        self._dropped: dict[tuple[str, str], Counter] = {}
        self._refusals = {policy: self.refusals.labels(policy) for policy in ("pixel", "key", "auth")}
        self._records = {d: internals.counting(self.records.labels(d)) for d in ("kafka", "spool")}
        self._ack = internals.timing(self.ack_durations)
        self._fallbacks_seen = 0

    def route(self, template: str) -> RouteMetrics:
        return RouteMetrics(template, self.requests, self.durations)

    def pixel_accepted(self, source: str, count: int) -> None:
        inc = self._accepted.get(source)
        if inc is None:
            inc = self._accepted[source] = internals.counting(self.accepted.labels(source))
        inc(count)

    def pixel_dropped(self, reason: str, source: str, count: int) -> None:
        series = self._dropped.get((reason, source))
        if series is None:
            series = self._dropped[(reason, source)] = self.dropped.labels(reason, source)
        series.inc(count)

    def refused(self, policy: str) -> None:
        """`policy`: pixel, key or auth."""
        series = self._refusals.get(policy)
        if series is None:
            series = self._refusals[policy] = self.refusals.labels(policy)
        series.inc()

    def produced(self, destination: str, count: int) -> None:
        """`destination`: kafka or spool."""
        self._records[destination](count)

    def acknowledged(self, seconds: float) -> None:
        """Records handed to Kafka were acknowledged after `seconds`."""
        self._ack.observe(seconds)

    def fallbacks(self, total: int) -> None:
        """Publish the process's count of requests limited without Redis (counted in process)."""
        if total > self._fallbacks_seen:
            self.redis_fallbacks.inc(total - self._fallbacks_seen)
            self._fallbacks_seen = total

    def pools(self, postgres: tuple[int, int, int] | None, redis: tuple[int, int] | None) -> None:
        """(in use, idle, max) of the Postgres pool, (in use, available) of Redis'; None: not open."""
        if postgres is not None:
            in_use, idle, most = postgres
            self.pg_connections.labels("in_use").set(in_use)
            self.pg_connections.labels("idle").set(idle)
            self.pg_max.set(most)
        if redis is not None:
            self.redis_connections.labels("in_use").set(redis[0])
            self.redis_connections.labels("available").set(redis[1])

    def spool(self, inflight: int, spool_bytes: int, pending: int) -> None:
        self.inflight.set(inflight)
        self.spool_bytes.set(spool_bytes)
        self.spool_pending.set(pending)
