"""`python -m app status`: one screen telling a person whether Sluice runs well, and what to do if not.

It looks at what runs, not at what should: Postgres, Redis and Kafka answer; ClickHouse's HTTP
interface answers (the ingest worker's, with the embedded engine); the API is ready (/readyz) and
how many granian workers serve it; and, from the processes' Prometheus metrics (the API's /metrics,
SLUICE_WORKER_METRICS, SLUICE_DISPATCHER_METRICS), the consumer lag, the spool, the webhook backlog
and the age of the last INSERT. A line is ok, FAIL (with a hint) or unknown (a process that serves
no such metric, or metrics switched off); the exit code is 1 when any line fails.
"""

import asyncio
import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from ingest.broker import kafka_ready
from storage.clickhouse import client as clickhouse
from storage.config import ApiConfig, Config, listen_address
from storage.redis.client import close_client, create_client, ping

# Long enough for a loaded loopback service, short enough that the screen comes at once.
CHECK_TIMEOUT_SECONDS = 2.0
# The threshold of the lag alert (ops/prometheus/alerts.yml): a burst a healthy worker absorbs in seconds.
LAG_RECORDS_MAX = 1000
# Events waiting and no INSERT for this long: the worker inserts at least every SLUICE_CONSUMER_BATCH_MS.
INSERT_STALE_SECONDS = 60
# A due webhook delivery waiting this long: the dispatcher is not running or not keeping up.
WEBHOOK_DUE_MAX_SECONDS = 300
COLOURS = {"ok": "\033[32m", "FAIL": "\033[31m", "unknown": "\033[33m"}
RESET = "\033[0m"


class State(Enum):
    OK = "ok"
    FAIL = "FAIL"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Line:
    name: str
    state: State
    detail: str
    hint: str = ""


# sample name → [(labels, value)], as a /metrics answer holds them
Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True)
class Scrape:
    """One process's /metrics: its samples, or the Line saying why there are none."""

    url: str
    samples: Samples | None
    trouble: Line | None = None


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: Samples | None, name: str, **labels: str) -> float | None:
    """The sum of `name`'s series with these labels; None when there is none."""
    values = [v for have, v in (samples or {}).get(name, []) if all(have.get(k) == w for k, w in labels.items())]
    return sum(values) if values else None


def api_url(api: ApiConfig) -> str:
    if api.api_url:
        return api.api_url
    host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
    return f"http://{f'[{host}]' if ':' in host else host}:{api.port}"


# -- services --------------------------------------------------------------------------------------


def _service(name: str, ok: bool, where: str, variable: str) -> Line:
    if ok:
        return Line(name, State.OK, where)
    return Line(name, State.FAIL, f"{where} does not answer", f"start the local stack (`make up`) or check {variable}")


def _where(url: str) -> str:
    """host:port of a URL, without its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


async def check_postgres(url: str) -> Line:
    try:
        connection = await asyncpg.connect(url, timeout=CHECK_TIMEOUT_SECONDS)
        await connection.close()
        ok = True
    except (TimeoutError, OSError, asyncpg.PostgresError):
        ok = False
    return _service("postgres", ok, _where(url), "DATABASE_URL")


async def check_redis(url: str) -> Line:
    redis = create_client(url)
    try:
        ok = await asyncio.wait_for(ping(redis), CHECK_TIMEOUT_SECONDS)
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        ok = False
    finally:
        await close_client(redis)
    return _service("redis", ok, _where(url), "REDIS_URL")


async def check_kafka(servers: str) -> Line:
    return _service("kafka", await kafka_ready(servers, CHECK_TIMEOUT_SECONDS), servers, "KAFKA_BOOTSTRAP_SERVERS")


def check_clickhouse(url: str) -> Line:
    """The interface every reader uses: the worker's for a chdb directory, else the server's."""
    if not url.startswith("chdb:"):
        endpoint = clickhouse.server_endpoint(url)
        try:
            ok = httpx.get(f"{endpoint.url}/ping", timeout=CHECK_TIMEOUT_SECONDS).status_code == 200
        except httpx.HTTPError:
            ok = False
        return _service("clickhouse", ok, endpoint.url, "CLICKHOUSE_URL")
    directory = clickhouse.chdb_directory(url)
    worker = clickhouse.answering_worker(directory)
    if worker is not None:
        return Line("clickhouse", State.OK, f"{worker.url} (the ingest worker's HTTP interface)")
    return Line(
        "clickhouse",
        State.FAIL,
        f"no ingest worker serves {directory}",
        "start the ingest worker (`make run`, or `python -m ingest`); SLUICE_CLICKHOUSE_HTTP must not be off",
    )


# -- processes -------------------------------------------------------------------------------------


async def scrape(http: httpx.AsyncClient, url: str, process: str, variable: str, start: str) -> Scrape:
    try:
        answer = await http.get(url)
        if answer.status_code == 200:
            return Scrape(url, parse(answer.text))
        detail = f"{url} answers {answer.status_code}"
    except httpx.HTTPError:
        detail = f"{url} does not answer"
    hint = f"is it running? `make run` starts it, or {start}; {variable} says where its metrics are"
    return Scrape(url, None, Line(process, State.FAIL, detail, hint))


async def scrape_listener(http: httpx.AsyncClient, setting: str, process: str, variable: str, start: str) -> Scrape:
    """The /metrics a worker or dispatcher serves at `setting` (its LISTEN value)."""
    address = listen_address(setting)
    if address is None:
        return Scrape("", None, Line(process, State.UNKNOWN, f"{variable} is off: no metrics to read"))
    host, port = address
    if port == 0:
        hint = f"set {variable} to the address the process logged at start"
        return Scrape("", None, Line(process, State.UNKNOWN, f"{variable} has port 0 (any free one)", hint))
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return await scrape(http, f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics", process, variable, start)


def process_line(name: str, scraped: Scrape) -> Line:
    if scraped.trouble is not None:
        return scraped.trouble
    return Line(name, State.OK, f"metrics at {scraped.url}{_build(scraped.samples)}")


def _build(samples: Samples | None) -> str:
    for labels, _ in (samples or {}).get("sluice_build_info", []):
        return f", version {labels.get('version', '?')} ({labels.get('commit', '?')})"
    return ""


async def check_api(http: httpx.AsyncClient, base: str, scraped: Scrape) -> Line:
    try:
        answer = await http.get(f"{base}/readyz")
    except httpx.HTTPError:
        return Line("api", State.FAIL, f"{base} does not answer", "start it: `make run` (or `python -m app serve`)")
    workers = granian_workers(urlsplit(base).port or 80)
    detail = f"{base}, {workers if workers is not None else 'unknown'} worker(s){_build(scraped.samples)}"
    if answer.status_code == 200:
        return Line("api", State.OK, f"ready at {detail}")
    checks = answer.json().get("checks", {}) if "json" in answer.headers.get("content-type", "") else {}
    failing = ", ".join(name for name, state in checks.items() if state != "ok") or f"status {answer.status_code}"
    return Line("api", State.FAIL, f"not ready at {detail}: {failing}", "see the lines above and the API's log")


def granian_workers(port: int) -> int | None:
    """Worker processes of the granian on this machine serving `port`: granian forks its workers,
    so they are the processes whose parent runs the same command line. None when none is found."""
    commands: dict[int, tuple[int, bytes]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes()
            ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if b"granian" in argv and f"\0--port\0{port}\0".encode() in argv:
            commands[int(entry.name)] = (ppid, argv)
    workers = [pid for pid, (ppid, argv) in commands.items() if commands.get(ppid, (0, b""))[1] == argv]
    return len(workers) or None


# -- what the metrics say --------------------------------------------------------------------------


def lag_line(dispatcher: Scrape, worker: Scrape, group: str) -> tuple[Line, float | None]:
    """Prefer the dispatcher's view from Kafka (it outlives the worker); else the worker's own."""
    lag = total(dispatcher.samples, "sluice_kafka_consumer_group_lag_records", group=group)
    source = "seen from Kafka by the dispatcher"
    if lag is None:
        lag, source = total(worker.samples, "sluice_consumer_lag_records"), "the worker's own view"
    if lag is None:
        return Line("consumer lag", State.UNKNOWN, "no lag metric from the dispatcher or the worker"), None
    detail = f"{lag:.0f} records (group {group}, {source})"
    if lag > LAG_RECORDS_MAX:
        hint = "if it keeps growing the ingest worker is stopped or slower than the load: see its log"
        return Line("consumer lag", State.FAIL, detail, hint), lag
    return Line("consumer lag", State.OK, detail), lag


def spool_line(api: Scrape) -> Line:
    pending, size = total(api.samples, "sluice_spool_records_pending"), total(api.samples, "sluice_spool_bytes")
    if pending is None:
        return Line("spool", State.UNKNOWN, "the API reports no spool metrics")
    detail = f"{pending:.0f} records pending ({_bytes(size)})"
    if pending > 0:
        hint = "events wait on disk for Kafka: is Kafka up? the API replays them when it answers"
        return Line("spool", State.FAIL, detail, hint)
    return Line("spool", State.OK, detail)


def webhooks_line(dispatcher: Scrape) -> Line:
    backlog = total(dispatcher.samples, "sluice_webhook_outbox_backlog")
    oldest = total(dispatcher.samples, "sluice_webhook_outbox_oldest_due_seconds") or 0.0
    if backlog is None:
        return Line("webhooks", State.UNKNOWN, "no outbox backlog metric from the dispatcher")
    detail = f"{backlog:.0f} deliveries due or waiting to retry" + (f", oldest due {oldest:.0f} s" if oldest else "")
    if oldest > WEBHOOK_DUE_MAX_SECONDS:
        hint = "the dispatcher is not keeping up: see its log (failing receivers, SLUICE_WEBHOOK_CONCURRENCY)"
        return Line("webhooks", State.FAIL, detail, hint)
    return Line("webhooks", State.OK, detail)


def last_insert_line(worker: Scrape, lag: float | None, now: float) -> Line:
    last = total(worker.samples, "sluice_consumer_last_insert_timestamp_seconds")
    if last is None:
        return Line("last insert", State.UNKNOWN, "no last-insert metric from the worker")
    age = now - last if last > 0 else None
    detail = "none since the worker started" if age is None else f"{max(age, 0):.0f} s ago"
    if lag and (age is None or age > INSERT_STALE_SECONDS):
        hint = "events wait in Kafka but nothing reaches ClickHouse: see the worker's log"
        return Line("last insert", State.FAIL, detail, hint)
    return Line("last insert", State.OK, detail)


def _bytes(size: float | None) -> str:
    value, unit = size or 0.0, "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


# -- the screen ------------------------------------------------------------------------------------


async def collect(config: Config) -> list[Line]:
    base, shared = api_url(config.api), config.shared
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_SECONDS) as http:
        api_metrics, worker, dispatcher = await asyncio.gather(
            scrape(http, f"{base}/metrics", "api", "SLUICE_API_URL", "`make run` (or `python -m app serve`)"),
            scrape_listener(http, config.worker.metrics, "worker", "SLUICE_WORKER_METRICS", "`python -m ingest`"),
            scrape_listener(
                http,
                config.webhooks.dispatcher_metrics,
                "dispatcher",
                "SLUICE_DISPATCHER_METRICS",
                "`python -m ingest.webhooks.dispatcher`",
            ),
        )
        services = await asyncio.gather(
            check_postgres(shared.database_url),
            check_redis(shared.redis_url),
            check_kafka(shared.kafka_bootstrap_servers),
            asyncio.to_thread(check_clickhouse, shared.clickhouse_url),
            check_api(http, base, api_metrics),
        )
    lag, lag_records = lag_line(dispatcher, worker, config.worker.consumer_group)
    return [
        *services,
        process_line("worker", worker),
        process_line("dispatcher", dispatcher),
        lag,
        spool_line(api_metrics),
        webhooks_line(dispatcher),
        last_insert_line(worker, lag_records, time.time()),
    ]


def render(lines: list[Line], colour: bool) -> str:
    width = max(len(line.name) for line in lines)
    out = []
    for line in lines:
        state = line.state.value.ljust(7)
        if colour:
            state = f"{COLOURS[line.state.value]}{state}{RESET}"
        out.append(f"{line.name.ljust(width)}  {state}  {line.detail}")
        if line.hint and line.state is not State.OK:
            out.append(f"{'': <{width}}  {'': <7}  → {line.hint}")
    return "\n".join(out)


def exit_code(lines: list[Line]) -> int:
    return 1 if any(line.state is State.FAIL for line in lines) else 0
