"""Command line of the ingest worker: `python -m ingest [consume]` and `python -m ingest query SQL`.

`consume` (the default) assembles the worker: its Prometheus /metrics (SLUICE_WORKER_METRICS),
ClickHouse schema, Kafka topics, ClickHouse's HTTP interface when ClickHouse is embedded (chdb://;
storage/clickhouse/http_interface.py), then the consumer until SIGTERM or Ctrl-C. `query` sends
one read-only SQL query to ClickHouse's HTTP interface (the server's, or the worker's when it holds
the chdb directory) and streams the answer to stdout in any ClickHouse format; with a chdb
directory no process holds it runs in process.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

import httpx

from ingest.events import Topics
from ingest.topics import ensure_topics
from ingest.worker.consumer import Consumer
from ingest.worker.metrics import query_done
from storage.clickhouse import client as clickhouse
from storage.clickhouse import http_interface, readers
from storage.clickhouse.client import QueryFailed
from storage.clickhouse.writer import ClickHouseThread
from storage.config import Config, WorkerConfig, load_or_exit
from storage.errors import Unavailable
from storage.telemetry import logs, metrics, tracing

log = logging.getLogger("ingest")

# SIGTERM usually comes with 30 s of grace (Kubernetes, Docker): finish the batch within 20.
SHUTDOWN_GRACE = 20.0


async def consume(config: Config) -> None:
    metrics.start("worker", "SLUICE_WORKER_METRICS", config.worker.metrics)
    thread = ClickHouseThread()
    try:
        client = await open_clickhouse(thread, config)
        await create_topics(config)
        interface = await start_http_interface(config.shared.clickhouse_url, config.worker)
        try:
            await run_consumer(Consumer(config, thread, client), config.worker.consumer_group)
        finally:
            if interface is not None:
                await interface.close()
            await thread.call(client.close)
    finally:
        thread.shutdown()


async def open_clickhouse(thread: ClickHouseThread, config: Config):
    url, ttl_days = config.shared.clickhouse_url, config.worker.events_ttl_days
    log.info("ClickHouse: opening %s", url)
    client = await thread.call(clickhouse.connect, url)
    applied = await thread.call(clickhouse.apply_schema, client)
    if await thread.call(clickhouse.set_events_ttl, client, ttl_days):
        log.info("ClickHouse: events now kept %d days (SLUICE_EVENTS_TTL_DAYS)", ttl_days)
    log.info("ClickHouse: schema current (%s)", ", ".join(applied))
    return client


async def create_topics(config: Config) -> None:
    shared = config.shared
    topics = Topics.with_prefix(shared.kafka_topic_prefix)
    names = (*topics.ingested(), topics.dead_letter)
    created = await ensure_topics(shared.kafka_bootstrap_servers, names, shared.kafka_partitions)
    log.info(
        "Kafka %s: topics %s%s",
        shared.kafka_bootstrap_servers,
        ", ".join(names),
        f" (created {', '.join(created)})" if created else "",
    )


def limits(worker: WorkerConfig) -> readers.Limits:
    return readers.Limits(
        max_execution_time=worker.clickhouse_http_max_execution_seconds,
        max_result_bytes=worker.clickhouse_http_max_result_bytes,
        max_memory_usage=worker.clickhouse_http_max_memory_bytes,
    )


async def start_http_interface(url: str, worker: WorkerConfig) -> http_interface.HttpInterface | None:
    """Embedded ClickHouse only: other processes cannot open the directory this one holds."""
    if not url.startswith("chdb:") or worker.clickhouse_http == "off":
        return None
    host, port = http_interface.parse_address(worker.clickhouse_http)
    settings = http_interface.Settings(
        host, port, dict(worker.clickhouse_http_users), limits(worker), worker.clickhouse_http_readers
    )
    interface = http_interface.HttpInterface(clickhouse.chdb_directory(url), settings, query_done)
    try:
        await interface.start()
    except OSError as exc:
        raise SystemExit(
            f"SLUICE_CLICKHOUSE_HTTP={worker.clickhouse_http}: cannot listen there ({exc.strerror or exc}); "
            "another process (another worker?) uses the port: choose another address, or `off`"
        ) from None
    log.info(
        "ClickHouse HTTP interface (read-only) on %s: curl '%s/?query=SELECT+1', any ClickHouse client, "
        "or python -m ingest query 'SELECT …'",
        interface.url,
        interface.url,
    )
    return interface


async def run_consumer(consumer: Consumer, group: str) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await consumer.start()
        log.info("consuming %s as group %s", ", ".join(consumer.tables), group)
        running = asyncio.create_task(consumer.run(stopping))
        await asyncio.wait({running, asyncio.create_task(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            log.info("stopping: inserting and committing the current batch")
            await finish(running)
        running.result()
    finally:
        await consumer.stop()
        log.info("stopped: %s", consumer.stats())


async def finish(running: asyncio.Task) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(running), SHUTDOWN_GRACE)
    except TimeoutError:
        running.cancel()
        log.warning(
            "the last batch did not finish in %.0f s; its records are read again at the next start "
            "(stored offsets skip any that got in)",
            SHUTDOWN_GRACE,
        )


# --- python -m ingest query --------------------------------------------------------------------


def query(config: Config, sql: str, fmt: str | None) -> None:
    """Stream the answer of `sql` to stdout; a FORMAT clause in the SQL wins over `fmt`."""
    fmt = fmt or ("PrettyCompactMonoBlock" if sys.stdout.isatty() else "TSV")
    url = config.shared.clickhouse_url
    if url.startswith("chdb:"):
        directory = clickhouse.chdb_directory(url)
        endpoint = clickhouse.worker_endpoint(directory)
        if endpoint is None:
            return query_in_process(directory, sql, fmt, limits(config.worker))
    else:
        endpoint = clickhouse.server_endpoint(url)
    query_over_http(endpoint, sql, fmt)


def query_over_http(endpoint: clickhouse.Endpoint, sql: str, fmt: str) -> None:
    # readonly=2: a ClickHouse server runs what it is sent; this command promises read-only SQL.
    params = {"default_format": fmt, "readonly": "2", **({"database": endpoint.database} if endpoint.database else {})}
    headers = {"X-ClickHouse-User": endpoint.user, "X-ClickHouse-Key": endpoint.password}
    try:
        with httpx.stream(
            "POST", endpoint.url + "/", params=params, content=sql.encode(), headers=headers, timeout=None
        ) as response:
            if response.status_code != 200:
                raise QueryFailed(response.read().decode("utf-8", "replace").strip())
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
    except httpx.HTTPError as exc:
        raise Unavailable("ClickHouse", f"{endpoint.url}: {exc}") from exc
    sys.stdout.buffer.flush()


def query_in_process(directory: str, sql: str, fmt: str, query_limits: readers.Limits) -> None:
    """No worker holds the directory: the same checks and formats, in this process."""
    connection = readers.ReaderConnection(directory, query_limits)
    try:
        checked = connection.check(sql)
        with contextlib.closing(connection.stream(checked, fmt, {}, {})) as chunks:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    except readers.QueryError as exc:
        raise QueryFailed(exc.text()) from None
    finally:
        connection.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest", description="Sluice ingest worker: Kafka → ClickHouse")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("consume", help="run the consumer (the default)")
    q = sub.add_parser("query", help="run one read-only SQL query against the configured ClickHouse")
    q.add_argument("sql", nargs="?", help='e.g. "SELECT count() FROM events" (default: read from stdin)')
    q.add_argument(
        "--format",
        help="any ClickHouse output format (CSVWithNames, JSONEachRow, Parquet, …); default: "
        "PrettyCompactMonoBlock at a terminal, TSV otherwise. A FORMAT clause in the SQL wins.",
    )
    return p


def main() -> None:
    args = parser().parse_args()
    config = load_or_exit(os.environ)
    logs.setup("worker", config.shared)
    # aiokafka narrates every rebalance step at INFO; the consumer logs the outcome itself.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if args.command == "query":
            return query(config, args.sql if args.sql is not None else sys.stdin.read(), args.format)
        tracing.setup("worker")  # off unless OTEL_* says otherwise; `query` stays untraced
        asyncio.run(consume(config))
    except QueryFailed as exc:
        raise SystemExit(f"query failed: {exc}") from None
    except Unavailable as exc:
        raise SystemExit(f"{exc}\n{hint(exc.service, config)}") from None


def hint(service: str, config: Config) -> str:
    shared = config.shared
    if service.lower() == "kafka":
        return f"Kafka at KAFKA_BOOTSTRAP_SERVERS={shared.kafka_bootstrap_servers}: is the stack up? try: make up"
    if shared.clickhouse_url.startswith("chdb:"):
        return (
            f"CLICKHOUSE_URL={shared.clickhouse_url}: an embedded directory opens in one process at a time; "
            "if another process holds it (an ingest worker answers queries for it, other commands do not), "
            "stop that process or point CLICKHOUSE_URL at a ClickHouse server"
        )
    return f"CLICKHOUSE_URL={shared.clickhouse_url}: is the ClickHouse server up?"


if __name__ == "__main__":
    main()
