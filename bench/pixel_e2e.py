"""Tracked events over HTTP into ClickHouse: pixel/track req/s next to hello-world, then the drain.

What it measures, on the real stack (Postgres, Redis, Kafka; ClickHouse embedded in a chdb
directory of this run's own, held by this run's own ingest worker):

* ``hello``: ``GET /hello`` of ``bench/hello_app.py``, the ceiling of BlackSheep on granian;
* ``pixel``: ``POST /api/v1/pixel/track`` with one event (JSON), the real app;
* ``pixel-batch``: the same endpoint with a batch of 50 events per request;

each granian server with the same flags, one worker, pinned to core 0; ``wrk -t1 -c64`` on
core 1; rounds interleaved A B C A B C. The limits stay on: every request carries a random
``X-Forwarded-For`` (10.0.0.0/8) through the trusted proxy 127.0.0.1, so the per-IP limit of
300/min is checked on every request but refuses none; a run with any non-2xx is refused, not
counted. The ingest worker (``python -m ingest``) runs meanwhile, unpinned, as in production.

After the last round: the time from the last request to the last row in ClickHouse, the
events/s from the first request to the last row, and the count check: rows in ClickHouse for the
workspace equal to the events the server made durable and answered 2xx (its /metrics counter
`sluice_pixel_events_accepted_total`; wrk's own count misses the requests in flight when it
stops), at least wrk's count, and no event id stored twice.

Setup: needs DATABASE_URL, REDIS_URL and KAFKA_BOOTSTRAP_SERVERS (``make bench`` or
``python -m storage.local_stack run -- python bench/pixel_e2e.py``). A fresh database, topic
prefix, consumer group, chdb directory and spool are made for the run and removed after.
Results go to ``bench/results/<YYYY-MM-DD>-<hostname>-pixel_e2e.json``.

Usage::

    python -m storage.local_stack run -- python bench/pixel_e2e.py           # 3 rounds x 10 s
    python -m storage.local_stack run -- python bench/pixel_e2e.py --quick   # 3 rounds x 3 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import harness
import workspace_get as wg
from harness import BENCH_DIR, CLIENT_CORE, CONNECTIONS, ROOT, SERVER_CORE, THREADS, Server

sys.path.insert(0, str(ROOT))

from storage.clickhouse import gateway  # noqa: E402
from storage.clickhouse.client import chdb_directory  # noqa: E402
from storage.postgres import domains, workspaces  # noqa: E402
from storage.postgres.pool import create_pool  # noqa: E402

BENCHMARK = "pixel_e2e"
REQUIRED_ENV = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
PACKAGES = ["blacksheep", "granian", "uvloop", "orjson", "aiokafka", "redis", "clickhouse-connect", "chdb-core"]
HOST = "bench.example"
BATCH = 50
WARMUP_SECONDS = 2
DRAIN_TIMEOUT = 300
WORKER_START_TIMEOUT = 60
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
EVENT = ('{"event":"pageview","url":"https://' + HOST + '/page/%d?utm_source=bench",'
         '"referrer":"https://www.google.com/","properties":{"title":"Bench page"}}')
LUA = """
math.randomseed(os.time() + %(seed)d)
local event = '%(event)s'
local batch = %(batch)d
request = function()
  local ip = string.format("10.%%d.%%d.%%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  local body
  if batch == 1 then
    body = string.format(event, math.random(1, 50))
  else
    local parts = {}
    for i = 1, batch do parts[i] = string.format(event, math.random(1, 50)) end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format("POST", "/api/v1/pixel/track",
    {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip, ["User-Agent"] = "%(ua)s"}, body)
end
"""


class Refused(Exception):
    """wrk saw non-2xx responses, or the count check failed: the figures must not be counted."""


@dataclass
class Target:
    label: str
    server: Server
    path: str
    events_per_request: int  # 0: not an ingest endpoint
    script: Path | None = None
    samples: list = field(default_factory=list)
    events_sent: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}{self.path}"


@dataclass
class Run:
    admin_dsn: str
    db_name: str
    workdir: Path
    prefix: str
    targets: list[Target] = field(default_factory=list)
    worker: subprocess.Popen | None = None
    worker_log: Path | None = None

    @property
    def clickhouse_url(self) -> str:
        return f"chdb://{self.workdir / 'clickhouse'}"

    def env(self, dsn: str) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": dsn, "CLICKHOUSE_URL": self.clickhouse_url,
                "SLUICE_KAFKA_TOPIC_PREFIX": self.prefix, "SLUICE_CONSUMER_GROUP": self.prefix + "ingest",
                "SLUICE_SPOOL_DIR": str(self.workdir / "spool"), "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
                "SLUICE_LOG_LEVEL": "warning"}


# --- setup ------------------------------------------------------------------


async def make_site(dsn: str) -> int:
    pool = await create_pool(dsn, 2)
    try:
        account = await workspaces.create_account(pool, "Bench Account")
        slug = f"bench-{uuid.uuid4().hex[:10]}"
        ws = await workspaces.create_workspace(pool, account["id"], "Bench Site", slug, slug, "enterprise", {})
        await domains.create_domain(pool, ws["id"], HOST, {})
        return ws["id"]
    finally:
        await pool.close()


def write_script(run: Run, batch: int) -> Path:
    path = run.workdir / f"track-{batch}.lua"
    path.write_text(LUA % {"seed": batch, "event": EVENT, "batch": batch, "ua": USER_AGENT})
    return path


def tracked_check(status: int, ctype: str, body: bytes) -> str | None:
    return None if status == 200 else f"HTTP {status} body={body[:200]!r}"


def build_targets(run: Run, dsn: str) -> list[Target]:
    env = run.env(dsn)
    port = harness.free_port()
    hello = Target("hello", Server("hello", wg.granian_argv("hello_app:app", port, False), port, BENCH_DIR,
                                   harness.with_pythonpath(env, BENCH_DIR)), "/hello", 0)
    port = harness.free_port()
    app_server = Server("pixel", wg.granian_argv("app.main:create_app", port, True), port, ROOT,
                        harness.with_pythonpath(env, ROOT))
    single = Target("pixel", app_server, "/api/v1/pixel/track", 1, write_script(run, 1))
    batch = Target(f"pixel-batch{BATCH}", app_server, "/api/v1/pixel/track", BATCH, write_script(run, BATCH))
    return [hello, single, batch]


def start_worker(run: Run, dsn: str) -> None:
    run.worker_log = run.workdir / "worker.log"
    with open(run.worker_log, "wb") as log:
        run.worker = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=run.env(dsn),
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while time.monotonic() < deadline:
        if run.worker.poll() is not None:
            raise RuntimeError(f"the ingest worker exited: {run.worker_log.read_text()[-2000:]}")
        try:
            count_rows(run, 0)
            return
        except Exception:  # noqa: BLE001 - not serving queries yet
            time.sleep(0.5)
    raise RuntimeError(f"the ingest worker did not start within {WORKER_START_TIMEOUT} s; log {run.worker_log}")


def count_rows(run: Run, workspace_id: int) -> tuple[int, int]:
    """(rows, distinct event ids) of the workspace in ClickHouse, read through the worker.

    Only through the worker's query socket: opening the chdb directory here (open_reader's
    fallback while the socket is not up yet) would lock the worker out of its own data.
    """
    reader = gateway.Reader(gateway.socket_path(chdb_directory(run.clickhouse_url)))
    result = reader.query("SELECT count(), uniqExact(event_id) FROM events WHERE workspace_id = {ws:UInt64}",
                          parameters={"ws": workspace_id})
    rows, distinct = result.result_rows[0]
    return int(rows), int(distinct)


# --- measuring --------------------------------------------------------------


def measure(target: Target, duration: int) -> harness.Sample:
    harness.ensure_alive(target.server)
    sample, _ = harness.run_wrk(target.url, duration, None, target.script)
    if sample.non_2xx:
        raise Refused(f"{sample.non_2xx} non-2xx responses ({target.label})")
    target.events_sent += sample.requests * target.events_per_request
    return sample


def start_servers(targets: list[Target]) -> None:
    started = set()
    for t in targets:
        if t.server.name not in started:
            print(f"start {t.server.name}: taskset -c {SERVER_CORE} {' '.join(t.server.argv)}", flush=True)
            harness.start(t.server)
            started.add(t.server.name)
        if t.events_per_request == 0:
            harness.wait_ready(t.server, t.path, wg.hello_check, {})
        else:
            harness.wait_ready(t.server, "/healthz", tracked_check, {})
        measure(t, WARMUP_SECONDS)
        print(f"  {t.label} ready on port {t.server.port}, warmed up {WARMUP_SECONDS}s", flush=True)


def run_rounds(targets: list[Target], rounds: int, duration: int) -> float:
    last_end = time.monotonic()
    for r in range(1, rounds + 1):
        for t in targets:
            sample = measure(t, duration)
            last_end = time.monotonic()
            t.samples.append(sample)
            events = f"  {sample.rps * t.events_per_request:>10,.0f} events/s" if t.events_per_request else ""
            print(f"round {r}/{rounds}: {t.label:<13} {sample.rps:>9,.0f} req/s{events}  "
                  f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms", flush=True)
    return last_end


def accepted_by_server(target: Target) -> int:
    _, _, body = harness.http_get(target.server.port, "/metrics", {}, timeout=5)
    for line in body.decode().splitlines():
        if line.startswith("sluice_pixel_events_accepted_total "):
            return int(line.split()[1])
    raise Refused("the pixel server's /metrics has no sluice_pixel_events_accepted_total")


def drain(run: Run, workspace_id: int, sent: int, last_end: float) -> dict:
    """Wait until ClickHouse holds every counted event; the time it took and the count check."""
    print(f"\ndrain: waiting for {sent:,} events in ClickHouse", flush=True)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    rows = distinct = 0
    stable_since, last_rows = None, -1
    while time.monotonic() < deadline:
        rows, distinct = count_rows(run, workspace_id)
        now = time.monotonic()
        if rows != last_rows:
            stable_since, last_rows = now, rows
            print(f"  {rows:>10,} rows ({now - last_end:5.1f} s after the last request)", flush=True)
        # Done when every counted event is there and nothing more arrived for 3 s (in-flight ones).
        if rows >= sent and now - stable_since >= 3:
            break
        time.sleep(0.5)
    drained_after = stable_since - last_end
    return {"sent_counted": sent, "stored": rows, "distinct_event_ids": distinct,
            "drain_seconds": round(drained_after, 2)}


# --- reporting --------------------------------------------------------------


def report(targets: list[Target], counts: dict) -> dict:
    med = {}
    hdr = f"{'target':<14} {'median req/s':>13} {'events/s':>11} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for t in targets:
        sm = harness.summarize(t.samples)
        med[t.label] = sm["median_rps"]
        ev = f"{sm['median_rps'] * t.events_per_request:>11,.0f}" if t.events_per_request else f"{'':>11}"
        print(f"{t.label:<14} {sm['median_rps']:>13,.0f} {ev} {sm['p50_ms']:>8.2f} "
              f"{statistics_p90(t):>8.2f} {sm['p99_ms']:>8.2f}")
    ratios = {f"{t.label}/hello": med[t.label] / med["hello"] for t in targets if t.label != "hello"}
    print()
    for name, value in ratios.items():
        print(f"{name + ' median req/s ratio:':<40} {value:.2f}")
    print(f"\ncount check: {counts['accepted']:,} events answered 2xx by the server "
          f"({counts['sent_counted']:,} counted by wrk), {counts['stored']:,} rows stored, "
          f"{counts['distinct_event_ids']:,} distinct event ids")
    print(f"last request → last row: {counts['drain_seconds']:.1f} s")
    ok = (counts["stored"] == counts["distinct_event_ids"] == counts["accepted"]
          and counts["sent_counted"] <= counts["accepted"])
    print("count check: " + ("OK (none lost, none doubled)" if ok else "FAILED"))
    if not ok:
        raise Refused(f"count check failed: {counts}")
    return ratios


def statistics_p90(t: Target) -> float:
    values = sorted(s.p90_ms for s in t.samples)
    return values[len(values) // 2]


# --- main -------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.round_args(ap)
    return harness.check_round_args(ap, ap.parse_args())


def cleanup(run: Run) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for t in run.targets:
        harness.stop(t.server)
    if run.worker is not None and run.worker.poll() is None:
        run.worker.terminate()
        try:
            run.worker.wait(20)
        except subprocess.TimeoutExpired:
            run.worker.kill()
    try:
        wg.drop_database(run.admin_dsn, run.db_name)
    except Exception as exc:  # noqa: BLE001
        print(f"warning: could not drop database {run.db_name}: {exc!r}", file=sys.stderr)
    shutil.rmtree(run.workdir, ignore_errors=True)


def execute(args: argparse.Namespace, run: Run) -> dict:
    print(f"setup: database {run.db_name}, topics {run.prefix}*, chdb {run.clickhouse_url}", flush=True)
    asyncio.run(wg.create_database(run.admin_dsn, run.db_name))
    dsn = wg.with_database(run.admin_dsn, run.db_name)
    workspace_id = asyncio.run(make_site(dsn))
    print(f"setup: enterprise workspace {workspace_id} with site {HOST}; starting the ingest worker", flush=True)
    start_worker(run, dsn)
    run.targets.extend(build_targets(run, dsn))
    start_servers(run.targets)
    first = time.monotonic()
    last_end = run_rounds(run.targets, args.rounds, args.duration)
    sent = sum(t.events_sent for t in run.targets)
    time.sleep(1)  # requests wrk left in flight finish on the server
    accepted = accepted_by_server(run.targets[1])
    counts = {**drain(run, workspace_id, accepted, last_end), "accepted": accepted}
    counts["sent_counted"] = sent
    ratios = report(run.targets, counts)
    counts["events_per_second_end_to_end"] = round(counts["stored"] / (last_end - first + counts["drain_seconds"]))
    print(f"end to end (rounds incl. hello, until the last row): {counts['events_per_second_end_to_end']:,} events/s")
    return {"ratios": ratios, "counts": counts,
            "targets": {t.label: {"summary": harness.summarize(t.samples), "events_per_request": t.events_per_request,
                                  "samples": [s.as_dict() for s in t.samples]} for t in run.targets}}


def main() -> int:
    args = parse_args()
    missing = [n for n in REQUIRED_ENV if not os.environ.get(n)]
    problem = (f"{', '.join(missing)} not set: run under `python -m storage.local_stack run -- ...` or `make bench`"
               if missing else harness.missing_tools())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, wg._sigterm)
    run = Run(os.environ["DATABASE_URL"], f"sluice_bench_{os.getpid()}", Path(tempfile.mkdtemp(prefix="sluice-bench-")),
              f"sluice-bench-{os.getpid()}.")
    machine = harness.machine_info(PACKAGES)
    print(__doc__.strip().split("\n\n")[0] + "\n")
    harness.print_machine(machine)
    print(f"Pinning:    granian (1 worker) on core {SERVER_CORE}; wrk -t{THREADS} -c{CONNECTIONS} on core {CLIENT_CORE}; "
          "ingest worker, Kafka, Redis, Postgres unpinned")
    print(f"Plan:       {args.rounds} rounds x {args.duration}s, interleaved hello / pixel / pixel-batch{BATCH}\n")
    try:
        outcome = execute(args, run)
    except Refused as exc:
        print(f"\nREFUSED: {exc}; figures not counted")
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup(run)
    path = harness.results_path(BENCHMARK)
    harness.write_json(path, {"benchmark": BENCHMARK, "finished_at": harness.utc_now(), "machine": machine,
                              "config": {"rounds": args.rounds, "duration_s": args.duration, "batch": BATCH,
                                         "wrk": f"taskset -c {CLIENT_CORE} wrk -t{THREADS} -c{CONNECTIONS}",
                                         "server_core": SERVER_CORE, "granian_flags": " ".join(wg.GRANIAN_FLAGS)},
                              **outcome})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
