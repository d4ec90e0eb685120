"""Tracked events end to end, sustained: HTTP → Kafka → ingest worker → ClickHouse, none lost or doubled.

What it measures, on the real stack (Postgres, Redis, Kafka; ClickHouse embedded in a chdb
directory of this run's own, held by this run's own ingest worker):

* ``single``: ``POST /api/v1/pixel/track`` with one event per request, for a sustained
  window (default 60 s; ``--quick`` 8 s), ``wrk -t1 -c64`` on core 1, the app (granian, one
  worker) on core 0, the ingest worker (``python -m ingest``) unpinned as in production;
* ``batch50``: the same with 50 events per request.

Each phase posts to its own site (own workspace), then waits for ClickHouse. It reports the
events/s accepted over HTTP (answered 2xx) during the window and the events/s into ClickHouse
over the whole window, from the first request to the last row stored (their ratio says how far
the pipeline lags the front door), the time from the last request to the last row, and the
count check: rows stored for the workspace = events the server answered 2xx (its /metrics
counter ``sluice_pixel_events_accepted_total``, read before and after; wrk's own count misses
the requests in flight when it stops, so it is only a lower bound), and no event id twice.

The limits stay on: every request comes from a random 10.x.y.z through the trusted proxy, so
the per-IP limit is checked on every request and refuses none; a phase with any non-2xx is
refused, not counted. Counts are read only through the worker's query socket: opening the
chdb directory from here would lock the worker out of its own data.

Usage::

    python -m storage.local_stack run -- python bench/pixel_e2e.py [--quick] [--duration 60]
        [--phases single,batch50] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import harness
import payloads
from harness import CLIENT_CORE, CONNECTIONS, ROOT, THREADS, Server
from tenants import Scratch

sys.path.insert(0, str(ROOT))

from storage.clickhouse.client import worker_reader  # noqa: E402

BENCHMARK = "pixel_e2e"
REQUIRED_ENV = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
PACKAGES = ["blacksheep", "granian", "uvloop", "orjson", "aiokafka", "redis", "clickhouse-connect", "chdb-core"]
PHASES = {"single": 1, "batch50": 50}
FULL_SECONDS, QUICK_SECONDS = 60, 8
WARMUP_SECONDS = 1
DRAIN_TIMEOUT = 300
WORKER_START_TIMEOUT = 60
PROGRESS_EVERY = 5.0  # seconds between progress lines during a phase
POLL_SECONDS = 0.25  # while draining: the last row's time is known to this much
STABLE_SECONDS = 2.0  # no new row for this long after the count is reached: nothing more in flight
STALL_SECONDS = 20.0  # no new row for this long while short of the count: the rest is lost


class Refused(Exception):
    """Non-2xx answers, or the count check failed: the figures must not be counted."""


@dataclass
class Phase:
    name: str
    batch: int
    host: str
    workspace_id: int = 0
    accepted: int = 0  # events the server answered 2xx (its counter's increase)
    wrk_events: int = 0  # events wrk saw answered (a lower bound)
    stored: int = 0
    distinct: int = 0
    window_s: float = 0.0  # first request → last request
    drain_s: float = 0.0  # last request → last row
    http_events_per_s: float = 0.0
    stored_events_per_s: float = 0.0  # first request → last row
    wrk: dict = field(default_factory=dict)
    progress: list = field(default_factory=list)  # (seconds since the first request, rows)
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None and self.stored == self.distinct == self.accepted >= self.wrk_events


# --- the pipeline's processes -----------------------------------------------


def clickhouse_url(scratch: Scratch) -> str:
    return f"chdb://{scratch.workdir / 'clickhouse'}"


def count_rows(scratch: Scratch, workspace_id: int) -> tuple[int, int]:
    """(rows, distinct event ids) of the workspace in ClickHouse, through the worker's HTTP interface only."""
    reader = worker_reader(clickhouse_url(scratch))
    if reader is None:
        raise RuntimeError("the ingest worker's ClickHouse HTTP interface does not answer")
    result = reader.query(
        "SELECT count(), uniqExact(event_id) FROM events WHERE workspace_id = {ws:UInt64}",
        parameters={"ws": workspace_id},
    )
    rows, distinct = result.result_rows[0]
    return int(rows), int(distinct)


def start_worker(scratch: Scratch, env: dict[str, str]) -> subprocess.Popen:
    log_path = scratch.workdir / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "ingest"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the ingest worker exited (code {worker.returncode}):\n{log_path.read_text()[-2000:]}")
        try:
            count_rows(scratch, 0)
            return worker
        except Exception:  # noqa: BLE001 - its query socket is not up yet
            time.sleep(0.5)
    raise RuntimeError(f"the ingest worker did not serve queries within {WORKER_START_TIMEOUT} s; log {log_path}")


def stop_worker(worker: subprocess.Popen | None) -> None:
    if worker is None or worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def accepted_by_server(server: Server) -> int:
    _, _, body = harness.http_get(server.port, "/metrics", {}, timeout=5)
    found = [
        int(float(line.rsplit(" ", 1)[1]))
        for line in body.decode().splitlines()
        if line.startswith("sluice_pixel_events_accepted_total{")  # one series per source
    ]
    if found:
        return sum(found)
    raise Refused("the pixel server's /metrics has no sluice_pixel_events_accepted_total")


# --- one phase --------------------------------------------------------------


def load(phase: Phase, server: Server, scratch: Scratch, duration: int) -> tuple[float, float]:
    """wrk for `duration` s, with a progress line every few seconds; (first, last request) times."""
    script = payloads.pixel_script(scratch.workdir, phase.host, phase.batch)
    url = f"http://127.0.0.1:{server.port}{payloads.TRACK}"
    first = time.monotonic()
    proc = harness.start_wrk(url, duration, None, script)
    next_line = first + PROGRESS_EVERY
    while proc.poll() is None:
        time.sleep(0.1)
        if time.monotonic() >= next_line and proc.poll() is None:
            next_line += PROGRESS_EVERY
            rows, _ = count_rows(scratch, phase.workspace_id)
            phase.progress.append((round(time.monotonic() - first, 1), rows))
            print(
                f"  {phase.name}: {time.monotonic() - first:4.0f} s of {duration} s, {rows:>10,} rows in ClickHouse",
                flush=True,
            )
    last = time.monotonic()
    sample, _ = harness.finish_wrk(proc)
    phase.wrk = sample.as_dict()
    phase.wrk_events = sample.requests * phase.batch
    if sample.non_2xx or sample.socket_errors.get("timeout"):
        raise Refused(f"{phase.name}: {sample.errors}")
    return first, last


def drain(phase: Phase, scratch: Scratch, first: float, last: float) -> float:
    """Wait until ClickHouse holds every accepted event and nothing more arrives; the last row's time."""
    deadline = last + DRAIN_TIMEOUT
    last_rows, changed_at = -1, last
    while time.monotonic() < deadline:
        rows, distinct = count_rows(scratch, phase.workspace_id)
        now = time.monotonic()
        if rows != last_rows:
            last_rows, changed_at = rows, now
            phase.progress.append((round(now - first, 1), rows))
        phase.stored, phase.distinct = rows, distinct
        if rows >= phase.accepted and now - changed_at >= STABLE_SECONDS:
            return changed_at
        if now - changed_at >= STALL_SECONDS:
            break
        time.sleep(POLL_SECONDS)
    raise Refused(
        f"{phase.name}: {phase.stored:,} of {phase.accepted:,} events in ClickHouse, none more for "
        f"{time.monotonic() - changed_at:.0f} s: {phase.accepted - phase.stored:,} lost (see the worker's log)"
    )


def run_phase(phase: Phase, server: Server, scratch: Scratch, duration: int) -> None:
    print(
        f"\n{phase.name}: {phase.batch} event(s) per request for {duration} s to {phase.host} "
        f"(workspace {phase.workspace_id})",
        flush=True,
    )
    before = accepted_by_server(server)
    first, last = load(phase, server, scratch, duration)
    time.sleep(0.5)  # requests wrk left in flight finish on the server
    phase.accepted = accepted_by_server(server) - before
    print(f"  {phase.name}: {phase.accepted:,} events answered 2xx; waiting for them in ClickHouse", flush=True)
    last_row = drain(phase, scratch, first, last)
    phase.window_s = round(last - first, 2)
    phase.drain_s = round(last_row - last, 2)
    phase.http_events_per_s = round(phase.accepted / (last - first))
    phase.stored_events_per_s = round(phase.stored / (last_row - first))
    verdict = "OK (none lost, none doubled)" if phase.ok else "FAILED"
    print(
        f"  {phase.name}: {phase.http_events_per_s:,} events/s accepted over HTTP, "
        f"{phase.stored_events_per_s:,} events/s into ClickHouse (first request → last row), "
        f"last row {phase.drain_s:.1f} s after the last request",
        flush=True,
    )
    print(
        f"  count check: {phase.accepted:,} answered 2xx (wrk saw {phase.wrk_events:,}), {phase.stored:,} stored, "
        f"{phase.distinct:,} distinct event ids: {verdict}",
        flush=True,
    )
    if not phase.ok:
        raise Refused(f"{phase.name}: count check failed")


# --- main -------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=None, help=f"seconds per phase (default {FULL_SECONDS})")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s phases")
    ap.add_argument("--phases", default=",".join(PHASES), help="which phases (default: all)")
    harness.out_arg(ap, BENCHMARK)
    args = ap.parse_args()
    args.duration = args.duration or (QUICK_SECONDS if args.quick else FULL_SECONDS)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if set(args.phases) - set(PHASES):
        ap.error(f"--phases: known phases are {', '.join(PHASES)}")
    return args


def execute(args, scratch: Scratch, procs: dict) -> list[Phase]:
    applied = scratch.create()
    phases = []
    for name in args.phases:
        host = f"{name}.bench.example"
        phases.append(Phase(name, PHASES[name], host, scratch.add_tenant(keys=0, host=host).workspace_id))
    warmup = scratch.add_tenant(keys=0, host="warmup.bench.example")
    print(
        f"setup: database {scratch.name} ({applied} migrations), one enterprise site per phase; "
        f"topics {scratch.prefix}*; chdb {clickhouse_url(scratch)}",
        flush=True,
    )
    env = {**scratch.env(), "CLICKHOUSE_URL": clickhouse_url(scratch), "SLUICE_CLICKHOUSE_HTTP": "127.0.0.1:0"}
    print("start the ingest worker (unpinned)", flush=True)
    procs["worker"] = start_worker(scratch, env)
    port = harness.free_port()
    server = procs["server"] = Server(
        "app", harness.server_argv("app.main:create_app", port, True), port, ROOT, harness.with_pythonpath(env, ROOT)
    )
    print(f"start the app: taskset -c {harness.SERVER_CORE} {' '.join(server.argv)}", flush=True)
    harness.start(server)
    harness.wait_ready(server, "/readyz", lambda st, ct, b: None if st == 200 else f"HTTP {st} {b[:200]!r}")
    script = payloads.pixel_script(scratch.workdir, "warmup.bench.example", 1)
    sample, _ = harness.run_wrk(f"http://127.0.0.1:{port}{payloads.TRACK}", WARMUP_SECONDS, None, script)
    if sample.non_2xx:
        raise Refused(f"warm-up (workspace {warmup.workspace_id}): {sample.errors}")
    time.sleep(0.5)  # the warm-up's requests in flight must not count in the first phase
    print(f"  app ready, warmed up {WARMUP_SECONDS}s ({sample.rps:,.0f} req/s)", flush=True)
    for phase in phases:
        try:
            run_phase(phase, server, scratch, args.duration)
        except Refused as exc:
            phase.refused = str(exc)
            print(f"  REFUSED: {exc}; not counted", flush=True)
    return phases


def main() -> int:
    args = parse_args()
    machine = harness.begin(__doc__, REQUIRED_ENV, PACKAGES)
    if machine is None:
        return 2
    scratch, procs, phases = Scratch(os.environ["DATABASE_URL"]), {}, []
    try:
        phases = execute(args, scratch, procs)
    except (Refused, RuntimeError) as exc:
        print(f"\nFAILED: {exc}; figures not counted", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the app and the worker, dropping the database and topics", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if procs.get("server"):
            harness.stop(procs["server"])
        stop_worker(procs.get("worker"))
        for problem in scratch.cleanup():
            print(f"warning: {problem}", file=sys.stderr)
    print()
    harness.save_results(
        args.out,
        BENCHMARK,
        {
            "machine": machine,
            "config": {
                "duration_s": args.duration,
                "wrk": f"taskset -c {CLIENT_CORE} wrk -t{THREADS} -c{CONNECTIONS}",
                "server_core": harness.SERVER_CORE,
                **harness.server_info(),
                "worker": "python -m ingest, unpinned",
            },
            "phases": {p.name: {**asdict(p), "ok": p.ok} for p in phases},
        },
    )
    return 0 if all(p.ok for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
