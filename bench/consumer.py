"""Rows/s of the ingest consumer alone (Kafka → chdb) next to a plain clickhouse-connect insert.

What it measures, for PixelEvent-shaped rows (~600 bytes of JSON each):

* ``consumer``: a topic is pre-filled with N records (default 500,000); then `python -m ingest`
  starts against a fresh chdb directory, and the clock runs from its "partitions assigned" log
  line to the moment `SELECT count() FROM events` (through its query gateway) reaches N. That is
  fetch + splice + INSERT (with the rollup views) + offset commit, start-up excluded.
* ``plain insert``: the same N records decoded in Python into row tuples and inserted with
  clickhouse-connect's `client.insert` (Native format) in batches of the same size, into the same
  schema in another fresh chdb directory, in a process of its own. Decoding is timed apart.

Setup: needs KAFKA_BOOTSTRAP_SERVERS (run under `python -m storage.local_stack run -- ...`).
Each run uses topics and a consumer group of its own. Results go to
bench/results/<YYYY-MM-DD>-<hostname>-consumer.json.

    .venv/bin/python -m storage.local_stack run -- .venv/bin/python bench/consumer.py [--rows N]
        [--batch-rows R] [--batch-ms M] [--partitions 6] [--skip-plain]   (R, M: WorkerSettings defaults)
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from ingest.events import PixelEvent, Topics, ch_time, event_id, now_ms, workspace_key  # noqa: E402
from ingest.settings import WorkerSettings  # noqa: E402
from ingest.topics import ensure_topics  # noqa: E402
from storage.clickhouse.client import open_reader  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"


def make_events(n: int) -> list[bytes]:
    """Varied but realistic rows: 50 workspaces, 100 paths, 5,000 visitors, times over an hour."""
    base = now_ms() - 3_600_000
    events = []
    for i in range(n):
        t = ch_time(base + i * 3_600_000 // n)
        events.append(PixelEvent(
            event_id(), 1 + i % 50, "pageview" if i % 5 else "click", t, t, None, f"https://shop.example.com/p/{i % 100}",
            "shop.example.com", f"/p/{i % 100}", "https://www.google.com/", "www.google.com", "newsletter", "email",
            "spring", "", "", '{"plan":"pro","value":42}', f"v{i % 5000:06d}", "203.0.113.0",
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", "Firefox", "120", "Linux",
            "desktop", False, "json").encode())
    return events


async def fill(bootstrap: str, topic: str, events: list[bytes]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20,
                                compression_type="lz4")
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


def drain(env: dict, n: int, log_path: Path) -> dict:
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while "partitions assigned" not in log_path.read_text():
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.02)
        started = time.perf_counter()
        count = 0
        while count < n:
            time.sleep(0.1)
            count = open_reader(env["CLICKHOUSE_URL"]).query("SELECT count() FROM events").result_rows[0][0]
        seconds = time.perf_counter() - started
        reader = open_reader(env["CLICKHOUSE_URL"])
        distinct = reader.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0]
        rollup = reader.query("SELECT sum(events) FROM pageviews_daily").result_rows[0][0]
    finally:
        worker.terminate()
        worker.wait(60)
    if not count == distinct == rollup == n:
        raise SystemExit(f"refusing the figures: {count} rows, {distinct} distinct, rollup {rollup}, expected {n}")
    return {"seconds": seconds, "rows_per_s": n / seconds}


PLAIN_INSERT = """
import sys, time, json, datetime, orjson, clickhouse_connect
from storage.clickhouse import client as ch
path, batch_rows = sys.argv[1], int(sys.argv[2])
values = [line.rstrip(b"\\n") for line in open(sys.argv[3], "rb")]
c = ch.connect("chdb://" + path)
ch.apply_schema(c)
columns = list(orjson.loads(values[0]))
times = {"time", "received_at", "client_time"}
def parse(v):
    return None if v is None else datetime.datetime.strptime(v, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
t0 = time.perf_counter()
rows = []
for value in values:
    record = orjson.loads(value)
    rows.append([parse(record[k]) if k in times else record[k] for k in columns])
t1 = time.perf_counter()
for start in range(0, len(rows), batch_rows):
    c.insert("events", rows[start:start + batch_rows], column_names=columns)
t2 = time.perf_counter()
assert c.query("SELECT count() FROM events").result_rows[0][0] == len(rows)
print(json.dumps({"decode_seconds": t1 - t0, "insert_seconds": t2 - t1}))
"""


def plain_insert(events: list[bytes], batch_rows: int, workdir: Path) -> dict:
    source = workdir / "records.jsonl"
    source.write_bytes(b"\n".join(events) + b"\n")
    out = subprocess.run([sys.executable, "-c", PLAIN_INSERT, str(workdir / "plain-chdb"), str(batch_rows), str(source)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    n = len(events)
    return {**figures, "rows_per_s_insert_only": n / figures["insert_seconds"],
            "rows_per_s_with_decode": n / (figures["insert_seconds"] + figures["decode_seconds"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500_000)
    shipped = WorkerSettings()  # by default, measure what the worker ships with
    p.add_argument("--batch-rows", type=int, default=shipped.batch_rows)
    p.add_argument("--batch-ms", type=int, default=shipped.batch_ms)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--skip-plain", action="store_true", help="only the consumer")
    p.add_argument("--quick", action="store_true", help="100,000 rows instead of --rows (make bench QUICK=1)")
    args = p.parse_args()
    if args.quick:
        args.rows = 100_000
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or sys.exit("KAFKA_BOOTSTRAP_SERVERS not set: run under "
                                                                       "python -m storage.local_stack run -- ...")
    run = f"bench-{uuid.uuid4().hex[:8]}"
    topics = Topics.with_prefix(f"sluice-{run}.")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-consumer-"))
    print(f"making {args.rows} PixelEvent records …", file=sys.stderr)
    events = make_events(args.rows)
    asyncio.run(ensure_topics(bootstrap, (*topics.ingested(), topics.dead_letter), args.partitions))
    fill_seconds = asyncio.run(fill(bootstrap, topics.pixel, events))
    print(f"filled {topics.pixel} ({args.partitions} partitions) in {fill_seconds:.1f} s", file=sys.stderr)
    # Log level info: the worker's "partitions assigned" line starts the clock.
    env = {**os.environ, "SLUICE_KAFKA_TOPIC_PREFIX": topics.pixel[:-len("pixel")], "SLUICE_CONSUMER_GROUP": run,
           "CLICKHOUSE_URL": f"chdb://{workdir / 'consumer-chdb'}", "SLUICE_CONSUMER_BATCH_ROWS": str(args.batch_rows),
           "SLUICE_CONSUMER_BATCH_MS": str(args.batch_ms), "SLUICE_LOG_LEVEL": "info"}
    try:
        consumer = drain(env, args.rows, workdir / "worker.log")
    finally:
        asyncio.run(delete_topics(bootstrap, [*topics.ingested(), topics.dead_letter]))
    print(f"consumer: {args.rows} rows in {consumer['seconds']:.2f} s = {consumer['rows_per_s']:,.0f} rows/s "
          f"(batch_rows {args.batch_rows}, batch_ms {args.batch_ms})")
    result = {"rows": args.rows, "batch_rows": args.batch_rows, "batch_ms": args.batch_ms,
              "partitions": args.partitions, "consumer": consumer,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}}
    if not args.skip_plain:
        plain = plain_insert(events, args.batch_rows, workdir)
        result["plain_insert"] = plain
        print(f"plain clickhouse-connect insert: {plain['rows_per_s_insert_only']:,.0f} rows/s insert only, "
              f"{plain['rows_per_s_with_decode']:,.0f} rows/s with JSON decoding")
        print(f"ratio consumer / plain insert: {consumer['rows_per_s'] / plain['rows_per_s_insert_only']:.2f} "
              f"(vs insert with decoding: {consumer['rows_per_s'] / plain['rows_per_s_with_decode']:.2f})")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{datetime.date.today()}-{platform.node()}-consumer.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
