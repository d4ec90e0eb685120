"""Command line of the ingest worker: `python -m ingest [consume]` and `python -m ingest query SQL`.

`consume` (the default) assembles the worker: ClickHouse schema, Kafka topics, the read gateway
when ClickHouse is embedded (chdb://), then the consumer until SIGTERM or Ctrl-C. `query` runs one
read-only SQL query against the configured ClickHouse, through the running worker when it holds
the chdb directory (storage/clickhouse/client.py open_reader).
"""

import argparse
import asyncio
import csv
import logging
import os
import signal
import sys

import orjson

from ingest.events import Topics
from ingest.topics import ensure_topics
from ingest.worker.consumer import Consumer
from storage.clickhouse import client as clickhouse
from storage.clickhouse.gateway import Gateway, QueryFailed, socket_path
from storage.clickhouse.writer import ClickHouseThread
from storage.config import Config, load_or_exit
from storage.errors import Unavailable

log = logging.getLogger("ingest")

# SIGTERM usually comes with 30 s of grace (Kubernetes, Docker): finish the batch within 20.
SHUTDOWN_GRACE = 20.0


async def consume(config: Config) -> None:
    thread = ClickHouseThread()
    try:
        client = await open_clickhouse(thread, config)
        await create_topics(config)
        gateway = await start_gateway(thread, config.shared.clickhouse_url)
        try:
            await run_consumer(Consumer(config, thread, client), config.worker.consumer_group)
        finally:
            if gateway is not None:
                await gateway.close()
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


async def start_gateway(thread: ClickHouseThread, url: str) -> Gateway | None:
    """Embedded ClickHouse only: other processes cannot open the directory this one holds."""
    if not url.startswith("chdb:"):
        return None
    reader = await thread.call(clickhouse.connect, url, settings=clickhouse.READ_ONLY)
    gateway = Gateway(socket_path(clickhouse.chdb_directory(url)), thread.call, reader)
    await gateway.start()
    log.info("query gateway on %s (python -m ingest query 'SELECT …' uses it)", gateway.path)
    return gateway


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


def query(config: Config, sql: str, fmt: str) -> None:
    reader = clickhouse.open_reader(config.shared.clickhouse_url)
    try:
        result = reader.query(sql)
    finally:
        reader.close()
    write_result(result.column_names, result.result_rows, fmt)


def write_result(columns, rows, fmt: str) -> None:
    if fmt == "json":
        for row in rows:
            sys.stdout.write(orjson.dumps(dict(zip(columns, row, strict=True)), default=str).decode() + "\n")
    elif fmt == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(columns)
        out.writerows(rows)
    else:
        print(table(columns, rows))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=sys.stderr)


def table(columns, rows) -> str:
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ingest", description="Sluice ingest worker: Kafka → ClickHouse")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("consume", help="run the consumer (the default)")
    q = sub.add_parser("query", help="run one read-only SQL query against the configured ClickHouse")
    q.add_argument("sql", help='e.g. "SELECT count() FROM events"')
    q.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (default), json (one object per line) or csv",
    )
    return p


def main() -> None:
    args = parser().parse_args()
    config = load_or_exit(os.environ)
    logging.basicConfig(level=config.shared.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiokafka narrates every rebalance step at INFO; the consumer logs the outcome itself.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if args.command == "query":
            return query(config, args.sql, args.format)
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
