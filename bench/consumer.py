"""Rows/s of the ingest consumer alone (Kafka → chdb) next to ClickHouse inserting the same rows by itself.

What it measures, for PixelEvent-shaped rows (~600 bytes of JSON each, ~770 with coordinates):

* ``consumer``: a topic is pre-filled with N records (default 500,000; ``--quick`` 300,000); then
  `python -m ingest` starts against a fresh chdb directory, and the clock runs from its
  "consuming … as group" log line (just before it joins the group, so the fetches it starts while
  its assignment is still being settled count) to the moment `events` and the `pageviews_daily`
  rollup both hold N (through its ClickHouse HTTP interface, polled every 20 ms). That is group join + fetch + splice
  + INSERT (with the rollup views) + offset commit; process start-up and schema excluded.
  ``rows_per_s_after_first_batch`` counts from the first batch in: the rate once fetching and
  inserting overlap, without the start (nothing to insert yet) but with the last INSERT alone.
* ``plain_insert`` (the ceiling): the rows the consumer builds — the same N values with their
  `_topic/_partition/_offset` spliced in — already in memory as JSONEachRow, inserted in batches
  of the same size with the consumer's own `writer.insert_rows` (so the same settings,
  `writer.INSERT_SETTINGS`), into the same schema and views in a fresh chdb directory, in a
  process of its own with the machine to itself: what chdb alone does with these rows.
* ``native_insert`` (full runs only; a reference, not a ceiling the consumer could reach): the same values
  decoded in Python and inserted with clickhouse-connect's `client.insert` (Native format, no
  JSON parsing in ClickHouse) with the same settings; decoding is timed apart.

It also records the CPU time per row of the worker and of the Kafka broker during the drain,
which says what bounds the figure. Setup: needs KAFKA_BOOTSTRAP_SERVERS (run under
`python -m storage.local_stack run -- ...`). Each run uses topics, a consumer group and
directories of its own and removes them. Results go to
bench/results/<YYYY-MM-DD>-<hostname>-consumer.json.

    .venv/bin/python -m storage.local_stack run -- .venv/bin/python bench/consumer.py [--rows N]
        [--batch-rows R] [--batch-ms M] [--partitions 6] [--skip-plain] [--query-loop]
        (R, M: the worker's defaults; --query-loop: an analyst's query runs over and over through
        the worker's HTTP interface during the drain, to see what reads cost the inserts)
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from ingest.events import PixelEvent, Topics, ch_time, event_id, now_ms, session_prefix, workspace_key  # noqa: E402
from ingest.topics import ensure_topics  # noqa: E402
from ingest.worker.batch import ConsumedRecord  # noqa: E402
from ingest.worker.sessions import Sessions  # noqa: E402
from storage.clickhouse.client import open_reader  # noqa: E402
from storage.clickhouse.writer import INSERT_SETTINGS, source_row  # noqa: E402
from storage.config import WorkerConfig  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
PACKAGES = ["aiokafka", "clickhouse-connect", "chdb-core", "orjson"]
# One 100k-row batch drained alone is one fetch then one INSERT, a latency rather than a rate:
# --quick drains three batches' worth so fetching and inserting overlap as they do under load.
QUICK_ROWS = 300_000
STARTED = "consuming "  # the worker's log line just before it subscribes: the clock starts here
POLL_SECONDS = 0.02


def make_events(n: int) -> list[bytes]:
    """Varied but realistic rows: 50 workspaces, 100 paths, 5,000 visitors, times over an hour, each
    with the session hint the API sends (so the consumer decides sessions as it does in production)."""
    base = now_ms() - 3_600_000
    events = []
    for i in range(n):
        at = base + i * 3_600_000 // n
        t = ch_time(at)
        visitor = f"{i % 5000:032x}"
        event = PixelEvent(
            event_id=event_id(),
            workspace_id=1 + i % 50,
            event="pageview" if i % 5 else "click",
            time=t,
            received_at=t,
            client_time=None,
            url=f"https://shop.example.com/p/{i % 100}",
            host="shop.example.com",
            path=f"/p/{i % 100}",
            referrer="https://www.google.com/",
            referrer_host="www.google.com",
            utm_source="newsletter",
            utm_medium="email",
            utm_campaign="spring",
            utm_term="",
            utm_content="",
            properties='{"plan":"pro","value":42}',
            visitor_id=visitor,
            ip_prefix="203.0.113.0",
            user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            browser="Firefox",
            browser_version="120.0",
            os="Linux",
            os_version="",
            device="desktop",
            device_brand="",
            device_model="",
            is_bot=False,
            country="DE",
            region="DE-BY",
            city="Munich",
            referrer_source="Newsletter",
            channel="Email",
            source="json",
        )
        events.append(event.encode(session_prefix(visitor, "", 1800, at, at)))
    return events


def partition_of(i: int, partitions: int) -> int:
    """A partition for event i in the ceiling's rows: spread by workspace, as the producer's keys spread
    them (which partition exactly matters to no view)."""
    return (i % 50) % partitions


async def fill(bootstrap: str, topic: str, events: list[bytes]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20, compression_type="lz4"
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for i, value in enumerate(events):
            pending.append(await producer.send(topic, value, key=workspace_key(1 + i % 50)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    """The run's topics hold hundreds of MB: give the shared broker its disk back."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def kafka_pid() -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if b"kafka.Kafka" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return int(entry)
            except OSError:
                continue
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time all cores spent on anything but idle and iowait, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


# Reads run beside the inserts, so a reader can see a batch in `events` before the views fed by
# the same INSERT: the drain is done when the last view has it too.
DRAINED = "SELECT (SELECT count() FROM events), (SELECT sum(events) FROM pageviews_daily)"
ANALYST_QUERY = "SELECT path, uniqExact(visitor_id) FROM events GROUP BY path ORDER BY 2 DESC LIMIT 10"


def query_loop(url: str, stop: threading.Event, done: list[int]) -> None:
    """An analyst beside the consumer: one query after another until `stop`."""
    reader = open_reader(url)
    while not stop.is_set():
        reader.query(ANALYST_QUERY)
        done.append(1)


def drain(env: dict, n: int, log_path: Path, with_queries: bool = False) -> dict:
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "ingest"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    broker = kafka_pid()
    try:
        while STARTED not in log_path.read_text():
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.005)
        started, cpu = time.perf_counter(), (cpu_seconds(worker.pid), cpu_seconds(broker), busy_seconds())
        poll = open_reader(env["CLICKHOUSE_URL"])  # the worker's HTTP interface, up before "consuming"
        stop, queries = threading.Event(), list[int]()
        if with_queries:
            threading.Thread(target=query_loop, args=(env["CLICKHOUSE_URL"], stop, queries), daemon=True).start()
        count, first = 0, None  # first: (time, count) when the first batch was in
        rolled = 0  # what a rollup view holds: the INSERT makes the events visible before its views'
        while count < n or rolled < n:
            time.sleep(POLL_SECONDS)
            count, rolled = poll.query(DRAINED).result_rows[0]
            if count and first is None:
                first = (time.perf_counter(), count)
        seconds = time.perf_counter() - started
        stop.set()
        after_first = (n - first[1]) / (time.perf_counter() - first[0]) if count > first[1] else None
        used = (cpu_seconds(worker.pid) - cpu[0], cpu_seconds(broker) - cpu[1], busy_seconds() - cpu[2])
        reader = open_reader(env["CLICKHOUSE_URL"])
        distinct = reader.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0]
        rollup = reader.query("SELECT sum(events) FROM pageviews_daily").result_rows[0][0]
    finally:
        worker.terminate()
        worker.wait(60)
    if not count == distinct == rollup == n:
        raise SystemExit(f"refusing the figures: {count} rows, {distinct} distinct, rollup {rollup}, expected {n}")
    cores = os.cpu_count() or 1
    return {
        "seconds": seconds,
        "analyst_queries": len(queries),
        "rows_per_s": n / seconds,
        "rows_per_s_after_first_batch": after_first,
        "cpu_us_per_row": {
            "worker": used[0] / n * 1e6,
            "kafka_broker": used[1] / n * 1e6,
            "all_processes": used[2] / n * 1e6,
            "available": seconds * cores / n * 1e6,
        },
    }


# Both run in a process of their own (one chdb directory per process) with the consumer's schema.
PLAIN_INSERT = """
import json, sys, time
from storage.clickhouse import client as ch, writer
path, batch_rows = sys.argv[1], int(sys.argv[2])
rows = open(sys.argv[3], "rb").read().splitlines(keepends=True)
c = ch.connect("chdb://" + path)
ch.apply_schema(c)
blocks = [b"".join(rows[s:s + batch_rows]) for s in range(0, len(rows), batch_rows)]
t0 = time.perf_counter()
for block in blocks:
    writer.insert_rows(c, "events", block)
t1 = time.perf_counter()
assert c.query("SELECT count() FROM events").result_rows[0][0] == len(rows)
print(json.dumps({"insert_seconds": t1 - t0}))
"""
NATIVE_INSERT = """
import datetime, json, sys, time, orjson
from storage.clickhouse import client as ch, writer
path, batch_rows = sys.argv[1], int(sys.argv[2])
values = open(sys.argv[3], "rb").read().splitlines()
c = ch.connect("chdb://" + path)
ch.apply_schema(c)
columns = list(orjson.loads(values[0]))
times = {"time", "received_at", "client_time"}
def parse(v):
    if v is None:
        return None
    return datetime.datetime.strptime(v, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
t0 = time.perf_counter()
rows = []
for value in values:
    record = orjson.loads(value)
    rows.append([parse(record[k]) if k in times else record[k] for k in columns])
t1 = time.perf_counter()
for start in range(0, len(rows), batch_rows):
    c.insert("events", rows[start:start + batch_rows], column_names=columns, settings=writer.INSERT_SETTINGS)
t2 = time.perf_counter()
assert c.query("SELECT count() FROM events").result_rows[0][0] == len(rows)
print(json.dumps({"decode_seconds": t1 - t0, "insert_seconds": t2 - t1}))
"""


def run_script(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def stored_values(events: list[bytes], topic: str, partitions: int) -> list[bytes]:
    """The values as the consumer inserts them: each event's hint replaced by its session id."""
    sessions = Sessions(topic)
    by_partition: dict[int, list[ConsumedRecord]] = {}
    records = []
    for i, value in enumerate(events):
        record = ConsumedRecord(topic, partition_of(i, partitions), i, workspace_key(1 + i % 50), value)
        by_partition.setdefault(record.partition, []).append(record)
        records.append(record)
    for partition, part in by_partition.items():
        sessions.rewrite(topic, partition, part)
    return [r.value or b"" for r in records]


def plain_insert(events: list[bytes], topic: str, partitions: int, batch_rows: int, workdir: Path) -> dict:
    """The rows the consumer would build, spliced here once (offsets counted per partition)."""
    source, offsets, name = workdir / "rows.jsonl", [0] * partitions, orjson.dumps(topic)
    with open(source, "wb") as out:
        for i, value in enumerate(stored_values(events, topic, partitions)):
            p = partition_of(i, partitions)
            out.write(source_row(value, name, p, offsets[p]) + b"\n")
            offsets[p] += 1
    figures = run_script(PLAIN_INSERT, str(workdir / "plain-chdb"), str(batch_rows), str(source))
    return {
        **figures,
        "rows_per_s_insert_only": len(events) / figures["insert_seconds"],
        "settings": dict(INSERT_SETTINGS),
        "format": "JSONEachRow (the consumer's rows and writer.insert_rows)",
    }


def native_insert(events: list[bytes], batch_rows: int, workdir: Path) -> dict:
    source = workdir / "values.jsonl"
    source.write_bytes(b"\n".join(stored_values(events, "pixel", 1)) + b"\n")
    figures = run_script(NATIVE_INSERT, str(workdir / "native-chdb"), str(batch_rows), str(source))
    n = len(events)
    return {
        **figures,
        "rows_per_s_insert_only": n / figures["insert_seconds"],
        "rows_per_s_with_decode": n / (figures["insert_seconds"] + figures["decode_seconds"]),
        "format": "Native via client.insert, values decoded in Python (no _topic/_partition/_offset)",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500_000)
    shipped = WorkerConfig()  # by default, measure what the worker ships with
    p.add_argument("--batch-rows", type=int, default=shipped.batch_rows)
    p.add_argument("--batch-ms", type=int, default=shipped.batch_ms)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--skip-plain", action="store_true", help="only the consumer")
    p.add_argument("--query-loop", action="store_true", help="an analyst's query loop beside the consumer")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows instead of --rows (make bench QUICK=1)")
    args = p.parse_args()
    if args.quick:
        args.rows = QUICK_ROWS
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or sys.exit(
        "KAFKA_BOOTSTRAP_SERVERS not set: run under python -m storage.local_stack run -- ..."
    )
    info = machine.machine_info(PACKAGES)
    machine.print_machine(info)
    run = f"bench-{uuid.uuid4().hex[:8]}"
    topics = Topics.with_prefix(f"sluice-{run}.")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-consumer-"))
    try:
        result = measure(args, bootstrap, run, topics, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = info
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{datetime.date.today()}-{platform.node()}-consumer.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}", file=sys.stderr)


def measure(args, bootstrap: str, run: str, topics: Topics, workdir: Path) -> dict:
    print(f"making {args.rows} PixelEvent records …", file=sys.stderr)
    events = make_events(args.rows)
    asyncio.run(ensure_topics(bootstrap, (*topics.ingested(), topics.dead_letter), args.partitions))
    fill_seconds = asyncio.run(fill(bootstrap, topics.pixel, events))
    print(f"filled {topics.pixel} ({args.partitions} partitions) in {fill_seconds:.1f} s", file=sys.stderr)
    # Log level info: the worker's "consuming … as group" line starts the clock.
    env = {
        **os.environ,
        "SLUICE_KAFKA_TOPIC_PREFIX": topics.pixel[: -len("pixel")],
        "SLUICE_CONSUMER_GROUP": run,
        "CLICKHOUSE_URL": f"chdb://{workdir / 'consumer-chdb'}",
        "SLUICE_CONSUMER_BATCH_ROWS": str(args.batch_rows),
        "SLUICE_CONSUMER_BATCH_MS": str(args.batch_ms),
        "SLUICE_LOG_LEVEL": "info",
        "SLUICE_CLICKHOUSE_HTTP": "127.0.0.1:0",  # any free port: readers find it in the directory
    }
    try:
        consumer = drain(env, args.rows, workdir / "worker.log", args.query_loop)
    finally:
        asyncio.run(delete_topics(bootstrap, [*topics.ingested(), topics.dead_letter]))
    shutil.rmtree(workdir / "consumer-chdb", ignore_errors=True)
    cpu = consumer["cpu_us_per_row"]
    print(
        f"consumer: {args.rows} rows in {consumer['seconds']:.2f} s = {consumer['rows_per_s']:,.0f} rows/s "
        f"(batch_rows {args.batch_rows}, batch_ms {args.batch_ms}); after the first batch was in: "
        f"{consumer['rows_per_s_after_first_batch'] or 0:,.0f} rows/s; CPU per row: worker {cpu['worker']:.1f} µs, "
        f"Kafka broker {cpu['kafka_broker']:.1f} µs, all processes {cpu['all_processes']:.1f} µs "
        f"of {cpu['available']:.1f} µs the {os.cpu_count()} cores had"
    )
    result = {
        "rows": args.rows,
        "batch_rows": args.batch_rows,
        "batch_ms": args.batch_ms,
        "partitions": args.partitions,
        "consumer": consumer,
    }
    if args.skip_plain:
        return result
    plain = result["plain_insert"] = plain_insert(events, topics.pixel, args.partitions, args.batch_rows, workdir)
    print(
        f"plain insert (ceiling): the same rows as JSONEachRow through writer.insert_rows, same schema and views, "
        f"settings {json.dumps(INSERT_SETTINGS)}, batches of {args.batch_rows}: "
        f"{plain['rows_per_s_insert_only']:,.0f} rows/s"
    )
    print(f"ratio consumer / plain insert: {consumer['rows_per_s'] / plain['rows_per_s_insert_only']:.2f}")
    if not args.quick:  # a reference only, and decoding in Python takes longer than the rest
        native = result["native_insert"] = native_insert(events, args.batch_rows, workdir)
        print(
            f"native insert (reference): values decoded in Python, client.insert: "
            f"{native['rows_per_s_insert_only']:,.0f} rows/s insert only, {native['rows_per_s_with_decode']:,.0f} "
            f"rows/s with decoding"
        )
    return result


if __name__ == "__main__":
    main()
