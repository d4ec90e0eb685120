"""`make bench`: every benchmark in sequence on the local stack, one results file, one table, charts.

Runs each benchmark script as its own process (output streamed as it goes), under a shared
lock (``SLUICE_BENCH_LOCK``, default /tmp/sluice-bench.lock; empty to disable) taken per
benchmark, so two people's runs on one machine never overlap yet neither waits for the other's
whole suite. Each script writes its results to a file of this run's; the suite gathers them,
with the machine, into ``bench/results/<date>-<host>.json`` and then prints the table and
draws the charts (bench/report.py). A benchmark that fails or is refused is reported as such
and the rest still run; the exit code is then 1.

    python -m storage.local_stack run -- python bench/suite.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import figures
import harness
import machine
import openloop
import report
from harness import BENCH_DIR, RESULTS_DIR, ROOT

LOCK = os.environ.get("SLUICE_BENCH_LOCK", "/tmp/sluice-bench.lock")
PACKAGES = [
    "blacksheep",
    "granian",
    "uvloop",
    "orjson",
    "asyncpg",
    "redis",
    "hiredis",
    "aiokafka",
    "clickhouse-connect",
    "chdb-core",
    "httpx",
]
# (name, what it measures, its arguments in full and in quick mode, rough seconds full/quick)
STEPS = [
    ("redis_scripts", "Lua scripts vs a plain Redis GET", [], ["--quick"], (100, 25)),
    ("http_api", "HTTP endpoints vs hello-world, then latency at 50%/80% load", [], ["--quick"], (260, 60)),
    ("pixel_e2e", "end to end, sustained: HTTP → Kafka → ClickHouse, count check", [], ["--quick"], (170, 45)),
    ("consumer", "the ingest consumer alone vs a plain insert", [], ["--quick"], (45, 12)),
    ("webhooks", "webhook deliveries vs raw POSTs", [], ["--quick"], (35, 10)),
    ("metrics_cost", "pixel/track with metrics on vs off, rounds alternating", [], ["--quick"], (110, 30)),
    (
        "stats",
        "Stats API queries over 10M stored events vs the same SQL run directly",
        ["--http"],
        ["--quick", "--http"],
        (570, 75),
    ),
]
# consumer.py writes its own file (another engineer's script); the suite moves it into the run.
OWN_RESULT_FILE = {"consumer"}


@contextmanager
def bench_lock(label: str, waited: list[float]):
    """The machine-wide benchmark lock for one step, saying so when it has to wait (seconds → waited)."""
    if not LOCK:
        yield
        return
    with open(LOCK, "a") as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"[bench] waiting for {LOCK}: another benchmark is running on this machine "
                "(if you hold it yourself, e.g. `flock ... make bench`, run with SLUICE_BENCH_LOCK= instead)",
                flush=True,
            )
            started = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited.append(time.monotonic() - started)
            print(f"[bench] got the lock after {waited[-1]:.0f} s; starting {label}", flush=True)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def wait_for(proc: subprocess.Popen, name: str) -> int:
    """The step's exit code. Ctrl-C reaches the step too and it cleans up (drops its database,
    stops its servers): wait for that rather than kill it; a SIGTERM to the suite is passed on."""

    def forward(signum, frame):  # noqa: ARG001
        proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                print(f"\n[bench] interrupted: waiting for {name} to clean up", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_step(index: int, name: str, what: str, argv: list[str], estimate: int, workdir: Path) -> dict:
    out = workdir / f"{name}.json"
    cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), *argv]
    if name not in OWN_RESULT_FILE:
        cmd += ["--out", str(out)]
    print(
        f"\n[bench {index}/{len(STEPS)}] {name}: {what} (about {estimate} s)\n"
        f"[bench] $ {' '.join(cmd[1:]).replace(str(ROOT) + '/', '')}",
        flush=True,
    )
    started_wall, started, waited = time.time(), time.monotonic(), []
    with bench_lock(name, waited):
        code = wait_for(subprocess.Popen(cmd, cwd=ROOT), name)
    lock_wait = round(sum(waited), 1)
    seconds = round(time.monotonic() - started - lock_wait, 1)
    if name in OWN_RESULT_FILE:
        fresh = [p for p in RESULTS_DIR.glob(f"*-{name}.json") if p.stat().st_mtime >= started_wall - 1]
        if fresh:
            os.replace(max(fresh, key=lambda p: p.stat().st_mtime), out)
    result = json.loads(out.read_text()) if out.exists() else None
    if code < 0 or code >= 128:  # the step was interrupted (130) or killed by a signal
        raise KeyboardInterrupt
    status = "ok" if code == 0 and result is not None else ("refused" if result is not None else "failed")
    verdict = {"ok": "done", "refused": "REFUSED (some figures not counted)", "failed": "FAILED"}[status]
    print(
        f"[bench {index}/{len(STEPS)}] {name} {verdict} in {seconds:.0f} s"
        + (f" (and {lock_wait:.0f} s waiting for the lock)" if lock_wait else ""),
        flush=True,
    )
    if status != "ok":
        rerun = " ".join([".venv/bin/python -m storage.local_stack run -- .venv/bin/python", f"bench/{name}.py", *argv])
        print(
            f"[bench] {name} exited with code {code}; the reason is in its output above. Rerun it alone with: {rerun}",
            flush=True,
        )
    return {
        "status": status,
        "returncode": code,
        "seconds": seconds,
        "lock_wait_s": lock_wait,
        "command": " ".join(cmd[1:]),
        "result": result,
    }


def gather(benchmarks: dict[str, dict]) -> list[dict]:
    rows = []
    for name, step in benchmarks.items():
        if step["result"] is None:
            rows += figures.failed(name, step["status"], f"exit code {step['returncode']}")
            continue
        try:
            rows += figures.extract(name, step["result"])
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            rows += figures.failed(name, "failed", f"unreadable results ({exc!r})")
    return [f.as_dict() for f in rows]


def preflight() -> str | None:
    missing = [n for n in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS") if not os.environ.get(n)]
    if missing:
        return (
            f"{', '.join(missing)} not set: run `make bench`, or "
            "`python -m storage.local_stack run -- python bench/suite.py`"
        )
    return harness.missing_tools()


def _sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the short version: a sanity check in about 4 minutes")
    args = ap.parse_args()
    problem = preflight()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    openloop.ensure_vegeta()
    info = machine.machine_info(PACKAGES)
    info["services"] = asyncio.run(machine.service_versions())
    mode = "QUICK (short runs: a sanity check, not figures to quote)" if args.quick else "full"
    print(
        f"Sluice benchmark suite, {mode}: {len(STEPS)} benchmarks, about "
        f"{sum(s[4][1 if args.quick else 0] for s in STEPS) // 60 + 1} minutes\n"
    )
    machine.print_machine(info)
    started_at, started = harness.utc_now(), time.monotonic()
    benchmarks: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-suite-") as tmp:
        try:
            for i, (name, what, full, quick, est) in enumerate(STEPS, 1):
                benchmarks[name] = run_step(
                    i, name, what, quick if args.quick else full, est[1 if args.quick else 0], Path(tmp)
                )
        except KeyboardInterrupt:
            print("\n[bench] interrupted: no results file written", file=sys.stderr)
            return 130
    lock_wait = round(sum(b["lock_wait_s"] for b in benchmarks.values()))
    seconds = round(time.monotonic() - started) - lock_wait
    doc = {
        "kind": report.KIND,
        "started_at": started_at,
        "finished_at": harness.utc_now(),
        "seconds": seconds,
        "lock_wait_s": lock_wait,
        "quick": args.quick,
        "machine": info,
        "benchmarks": benchmarks,
        "figures": gather(benchmarks),
    }
    # A quick run must not overwrite the day's full results.
    suffix = "-quick" if args.quick else ""
    path = RESULTS_DIR / f"{datetime.date.today().isoformat()}-{socket.gethostname()}{suffix}.json"
    harness.write_json(path, doc)
    waits = f" (plus {lock_wait} s waiting for the lock)" if lock_wait else ""
    print(
        f"\n[bench] all {len(STEPS)} benchmarks in {seconds // 60} min {seconds % 60} s{waits}; results: "
        f"{path.relative_to(ROOT)}\n"
    )
    report.print_table(doc)
    charts = report.draw_charts(doc)
    for chart in charts:
        print(f"chart: {chart.relative_to(ROOT)}")
    bad = [n for n, s in benchmarks.items() if s["status"] != "ok"]
    if bad:
        print(f"\n[bench] not all figures counted: {', '.join(bad)} (see above)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
