"""HTTP: /metrics — the whole API's metrics in Prometheus' text format, summed over granian's worker
processes (no auth; keep it internal). SLUICE_METRICS=off: nothing is observed and /metrics is 404.

Each worker process writes its values to files of one directory (prometheus_client's multiprocess
mode, storage/telemetry/metrics.py); whichever worker answers a scrape sums them all. The
directory must be shared by one server's workers only and start empty with that server, yet
nothing runs in granian's main process: the API starts as `python -m app run` (granian a child of
the supervisor), `python -m app serve` (granian exec'd, as docker-compose runs it) or granian's own
command line (the tests). So each worker derives it from what its siblings share, their parent:

- PROMETHEUS_MULTIPROC_DIR when set (an operator's choice), else
  `$TMPDIR/sluice-api-metrics-<uid>/<parent pid>-<parent start time>`: a new server, even one
  that got a recycled pid, gets a new, empty directory.
- The first worker to start (the one that creates the `.server-<parent>` mark) removes whatever
  no live sibling wrote: an explicit directory's leftovers of an earlier server, and the
  directories of servers that are gone.
- A worker that dies (granian starts another) leaves its counters, so totals never go down; its
  live gauges (in-flight records, spool, pools, Redis down) are dropped by the next worker to
  start and at every scrape, when their pid is no longer a child of the same parent.

Gauges that describe a process's state (pools, spool, in-flight records) and the count of requests
limited without Redis are published by each process every PUBLISH_SECONDS, and at once by the
process answering a scrape; everything else is written as it happens.
"""

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import asyncpg
from blacksheep import Content, Response
from redis.asyncio import Redis

from app.access.rate_limits import RedisHealth
from app.http.errors import ResourceNotFound
from app.http.routing import PublicCall, Route
from ingest.handoff.sink import Sink
from storage.telemetry import metrics as telemetry
from storage.telemetry.metrics import ApiMetrics

# How stale another process's pool, spool and fallback figures may be in a scrape.
PUBLISH_SECONDS = 5.0
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
SERVER_MARK = ".server-"
# The pid in prometheus_client's file names: gauge_livesum_1234.db, counter_1234.db, ...
FILE_PID = re.compile(r"_(\d+)\.db$")
OWNED_DIRECTORY = re.compile(r"^(\d+)-(\d+)$")
PROC = Path("/proc")


def base_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"sluice-api-metrics-{os.getuid()}"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (Linux, as app/cli/supervisor.py reads
    it too); None if the process is gone or a zombie."""
    try:
        with open(PROC / str(pid) / "stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields


def start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot); None if it is gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def parent_of(pid: int) -> int | None:
    """The parent of a running process; None if it is gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def choose_directory(environ) -> Path:
    """The directory this server's workers share (see the module docstring)."""
    explicit = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if explicit:
        return Path(explicit)
    parent = os.getppid()
    return base_directory() / f"{parent}-{start_time(parent)}"


def prepare_directory(directory: Path) -> None:
    """Create it; the first worker of a server empties it of an earlier server's files and removes
    gone servers' directories; every worker drops the live gauges of dead siblings."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent = os.getppid()
    mark = directory / f"{SERVER_MARK}{parent}-{start_time(parent)}"
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        forget_dead_siblings(directory)
        return
    for path in directory.iterdir():
        if path != mark and not is_sibling_file(path.name):
            path.unlink(missing_ok=True)
    if directory.parent == base_directory():
        remove_gone_servers(directory.parent)


def is_sibling_file(name: str) -> bool:
    match = FILE_PID.search(name)
    return match is not None and parent_of(int(match.group(1))) == os.getppid()


def forget_dead_siblings(directory: Path) -> None:
    """Drop the live gauges of workers of this server that died (granian started others)."""
    dead = set()
    for path in directory.glob("gauge_live*.db"):
        match = FILE_PID.search(path.name)
        if match is not None and parent_of(int(match.group(1))) != os.getppid():
            dead.add(int(match.group(1)))
    for pid in dead:
        telemetry.forget_process(directory, pid)


def remove_gone_servers(base: Path) -> None:
    for path in base.iterdir():
        owner = OWNED_DIRECTORY.match(path.name)
        if owner is not None and start_time(int(owner.group(1))) != int(owner.group(2)):
            shutil.rmtree(path, ignore_errors=True)


def redis_pool_counts(client: Redis) -> tuple[int, int]:
    """(in use, available) connections of a redis-py pool (its public, OpenTelemetry-minded count)."""
    pool = client.connection_pool
    counts = {attributes.get("db.client.connection.state"): n for n, attributes in pool.get_connection_count()}
    return counts.get("used", 0), counts.get("idle", 0)


class Exposition:
    """This process's side of /metrics: its ApiMetrics, the state it publishes, the scrape's answer."""

    def __init__(self, directory: Path, metrics: ApiMetrics):
        self.directory, self.metrics = directory, metrics
        self._sources: tuple[asyncpg.Pool, Redis, Sink, RedisHealth] | None = None
        self._task: asyncio.Task | None = None

    def start(self, pool: asyncpg.Pool, redis: Redis, sink: Sink, health: RedisHealth) -> None:
        """From the lifespan, once they exist: publish their state now and every PUBLISH_SECONDS."""
        self._sources = (pool, redis, sink, health)
        self.publish()
        self._task = asyncio.get_running_loop().create_task(self._publish_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sources = None

    def publish(self) -> None:
        if self._sources is None:
            return
        pool, redis, sink, health = self._sources
        in_use = pool.get_size() - pool.get_idle_size()
        self.metrics.pools((in_use, pool.get_idle_size(), pool.get_max_size()), redis_pool_counts(redis))
        stats = sink.stats()
        self.metrics.spool(stats.get("inflight", 0), stats.get("spool_bytes", 0), stats.get("spool_records_pending", 0))
        self.metrics.fallbacks(health.fallback_requests)

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_SECONDS)
            self.publish()

    async def render(self) -> bytes:
        """Every process's metrics, this one's state published first; the files are read in a thread."""
        self.publish()
        return await asyncio.to_thread(self._collect)

    def _collect(self) -> bytes:
        forget_dead_siblings(self.directory)
        return telemetry.exposition(self.directory)


def routes(exposition: Exposition | None) -> list[Route]:
    """The /metrics route; `exposition` None (SLUICE_METRICS=off, or a route table for documents): 404."""

    async def get_metrics(call: PublicCall) -> Response:
        if exposition is None:
            raise ResourceNotFound("Metrics are off on this server (SLUICE_METRICS=off).")
        body = await exposition.render()
        return Response(200, None, Content(CONTENT_TYPE, body))

    return [Route("GET", "/metrics", get_metrics, None, "The API's metrics (Prometheus text format)", "Health")]
