"""Requests/s of the authenticated GET /api/v1/workspaces/{id}, rate limiter on and off, next to a bare hello-world.

What it measures: HTTP/1.1 keep-alive throughput (req/s) and latency of

* ``hello``: ``GET /hello`` of ``bench/hello_app.py`` (``hello_app:app``,
  run from ``bench/``), the ceiling of BlackSheep on granian;
* ``workspace``: ``GET /api/v1/workspaces/{id}`` of the real app
  (``--factory app.main:create_app``, run from the repository root) with a
  valid Bearer key and rate limits on (the default): one Redis round trip
  (key_gate.lua: the cached key record and its GCRA bucket), then the
  workspace row from Postgres;
* ``workspace-nolimit``: the same app in a second server with
  ``SLUICE_RATE_LIMITS=off``: the key gate only reads the cached record;

all served by granian with the same flags (``GRANIAN_FLAGS``: asgi, uvloop,
HTTP/1, no websockets, one worker, log level warning) pinned to core 0, and
loaded by ``wrk -t1 -c64 --latency`` pinned to core 1. The servers are
started once and kept running; rounds are interleaved A B C A B C (hello,
workspace, workspace-nolimit, ...). The workspace is on the enterprise tier
(100,000/min, 100% burst: a bucket of 200,000) so nothing is refused; after
warm-up each app server is checked to be limiting (X-RateLimit-Remaining
below capacity) or not (at capacity) as configured. The summary gives
median/min/max req/s over rounds, median p50/p99, and the ratios
workspace/hello, workspace-nolimit/hello and workspace/workspace-nolimit.
Any non-2xx response seen by wrk refuses the figures.

Setup: needs DATABASE_URL and REDIS_URL (run under
``python -m storage.local_stack run -- ...`` or ``make bench``; this GET
does not touch Kafka). A fresh database ``sluice_bench_<pid>`` is created on
DATABASE_URL's server and migrated; an account, an enterprise workspace and
an all-scopes key are made with the repository functions; the database is
dropped at the end, also on Ctrl-C. Both app servers share the key's cached
record in REDIS_URL (a fresh key, so a fresh bucket).
Results go to ``bench/results/<YYYY-MM-DD>-<hostname>-workspace_get.json``.

Usage::

    python -m storage.local_stack run -- python bench/workspace_get.py           # 3 rounds x 10 s
    python -m storage.local_stack run -- python bench/workspace_get.py --quick   # 3 rounds x 3 s
    make bench   # or: make bench QUICK=1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import harness
from harness import BENCH_DIR, CLIENT_CORE, CONNECTIONS, ROOT, SERVER_CORE, THREADS, ReadyCheck, Server

sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from app.rate_limits import tier_limits  # noqa: E402
from app.tokens import generate_key  # noqa: E402
from storage.postgres import api_keys, workspaces  # noqa: E402
from storage.postgres.migrate import migrate  # noqa: E402
from storage.postgres.pool import create_pool  # noqa: E402

REQUIRED_ENV = ("DATABASE_URL", "REDIS_URL")
GRANIAN_FLAGS = [
    "--interface", "asgi", "--loop", "uvloop", "--http", "1", "--no-ws",
    "--workers", "1", "--log-level", "warning",
]
WARMUP_SECONDS = 2
BENCHMARK = "workspace_get"
TIER = "enterprise"
WORKSPACE_PATH = "/api/v1/workspaces/{id}"
PACKAGES = ["blacksheep", "granian", "uvloop", "orjson", "asyncpg", "redis"]
HELLO_BODY = b'{"hello":"world"}'


class Refused(Exception):
    """wrk saw non-2xx responses: the figures must not be counted."""


@dataclass
class Endpoint:
    label: str
    server: Server
    path: str
    check: ReadyCheck
    headers: dict[str, str]
    template: str  # the route, for the results
    env: dict[str, str]  # what this server's environment sets, for the results
    limiting: bool | None = None  # expected rate limiting; None: no limiter (hello)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}{self.path}"


# --- setup: environment, database, tenant -----------------------------------


def missing_env() -> list[str]:
    return [name for name in REQUIRED_ENV if not os.environ.get(name)]


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _admin_execute(admin_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(admin_dsn: str, name: str) -> list[str]:
    """Create and migrate the database; return the migrations applied."""
    await _admin_execute(admin_dsn, f'CREATE DATABASE "{name}"')
    return await migrate(with_database(admin_dsn, name))


def drop_database(admin_dsn: str, name: str) -> None:
    asyncio.run(_admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def make_tenant(dsn: str) -> tuple[int, str]:
    """An account, an enterprise workspace and an all-scopes key, as tests/conftest.py makes them."""
    pool = await create_pool(dsn, 2)
    try:
        account = await workspaces.create_account(pool, "Bench Account")
        slug = f"bench-{uuid.uuid4().hex[:10]}"
        ws = await workspaces.create_workspace(pool, account["id"], "Bench Workspace", slug, slug, TIER, {})
        key, prefix, key_hash = generate_key()
        await api_keys.create_key(pool, ws["id"], "bench key", prefix, key_hash, ["*"], None, None)
        return ws["id"], key
    finally:
        await pool.close()


# --- servers ----------------------------------------------------------------


def granian_argv(target: str, port: int, factory: bool) -> list[str]:
    argv = [sys.executable, "-m", "granian", *GRANIAN_FLAGS, "--host", "127.0.0.1", "--port", str(port)]
    return argv + (["--factory", target] if factory else [target])


def hello_check(status: int, ctype: str, body: bytes) -> str | None:
    if status == 200 and body == HELLO_BODY and ctype.startswith("application/json"):
        return None
    return f"HTTP {status} content-type={ctype!r} body={body[:80]!r}"


def workspace_check(ws_id: int) -> ReadyCheck:
    def check(status: int, ctype: str, body: bytes) -> str | None:
        try:
            ok = status == 200 and json.loads(body)["data"]["id"] == ws_id
        except (ValueError, KeyError, TypeError):
            ok = False
        return None if ok else f"HTTP {status} content-type={ctype!r} body={body[:120]!r}"

    return check


def build_endpoints(bench_dsn: str, ws_id: int, key: str) -> list[Endpoint]:
    """hello, workspace (limits on), workspace-nolimit (SLUICE_RATE_LIMITS=off); each its own server."""
    common = {"SLUICE_LOG_LEVEL": "warning"}
    base = {k: v for k, v in os.environ.items() if k != "SLUICE_RATE_LIMITS"}
    path, check = f"/api/v1/workspaces/{ws_id}", workspace_check(ws_id)
    auth = {"Authorization": f"Bearer {key}"}

    port = harness.free_port()
    hello = Endpoint("hello", Server("hello", granian_argv("hello_app:app", port, False), port, BENCH_DIR,
                                     harness.with_pythonpath({**base, **common}, BENCH_DIR)),
                     "/hello", hello_check, {}, "/hello", common)
    endpoints = [hello]
    for label, limits in (("workspace", "on"), ("workspace-nolimit", "off")):
        env = {**common, "SLUICE_RATE_LIMITS": limits}
        port = harness.free_port()
        server = Server(label, granian_argv("app.main:create_app", port, True), port, ROOT,
                        harness.with_pythonpath({**base, **env, "DATABASE_URL": bench_dsn}, ROOT))
        endpoints.append(Endpoint(label, server, path, check, auth, WORKSPACE_PATH, env, limiting=limits == "on"))
    return endpoints


# --- measuring --------------------------------------------------------------


def measure(ep: Endpoint, duration: int) -> harness.Sample:
    harness.ensure_alive(ep.server)
    sample, _ = harness.run_wrk(ep.url, duration, ep.headers)
    if sample.non_2xx:
        raise Refused(f"{sample.non_2xx} non-2xx responses ({ep.label}, {ep.url})")
    return sample


def check_limiting(ep: Endpoint) -> str:
    """Refuse unless the server limits (or not) as configured, on the enterprise tier; say what was seen."""
    if ep.limiting is None:
        return ""
    limit, capacity = tier_limits(TIER)
    status, headers, _ = harness.http_get(ep.server.port, ep.path, ep.headers, timeout=5)
    seen_limit, remaining = headers.get("X-RateLimit-Limit"), headers.get("X-RateLimit-Remaining")
    if status != 200 or seen_limit != str(limit) or remaining is None or not remaining.isdigit():
        raise Refused(f"{ep.label}: HTTP {status}, X-RateLimit-Limit {seen_limit!r}, "
                      f"X-RateLimit-Remaining {remaining!r}; expected 200 and the {TIER} limit {limit}")
    limiting = int(remaining) < capacity
    if limiting != ep.limiting:
        raise Refused(f"{ep.label}: X-RateLimit-Remaining {remaining} of {capacity} after warm-up: "
                      f"rate limiting is {'on' if limiting else 'off'}, expected {'on' if ep.limiting else 'off'}")
    return f", limiter {'on' if limiting else 'off'} (remaining {int(remaining):,} of {capacity:,})"


def start_all(endpoints: list[Endpoint]) -> None:
    for ep in endpoints:
        s = ep.server
        env = " ".join(f"{k}={v}" for k, v in ep.env.items())
        print(f"start {ep.label}: {env} taskset -c {SERVER_CORE} {' '.join(s.argv)}  (cwd={s.cwd})", flush=True)
        harness.start(s)
        harness.wait_ready(s, ep.path, ep.check, ep.headers)
        measure(ep, WARMUP_SECONDS)
        seen = check_limiting(ep)
        print(f"  {ep.label} ready on port {s.port}, GET {ep.path} checked, warmed up {WARMUP_SECONDS}s{seen}",
              flush=True)
    print()


def run_rounds(endpoints: list[Endpoint], rounds: int, duration: int) -> None:
    for r in range(1, rounds + 1):
        for ep in endpoints:
            sample = measure(ep, duration)
            ep.server.samples.append(sample)
            extra = f"  [{sample.errors}]" if sample.errors else ""
            print(
                f"round {r}/{rounds}: {ep.label:<17} {sample.rps:>10,.0f} req/s  "
                f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms{extra}",
                flush=True,
            )


# --- reporting --------------------------------------------------------------


# (numerator, denominator, what it says) for the median req/s ratios.
RATIOS = (
    ("workspace", "hello", "limiter on / hello"),
    ("workspace-nolimit", "hello", "limiter off / hello"),
    ("workspace", "workspace-nolimit", "limiter on / off"),
)


def print_table(endpoints: list[Endpoint]) -> dict[str, float]:
    """Print the summary table and the ratios of median req/s; return the ratios."""
    hdr = f"{'endpoint':<18} {'median req/s':>13} {'min':>10} {'max':>10} {'p50 ms':>8} {'p99 ms':>8}"
    print(hdr)
    print("-" * len(hdr))
    med = {}
    for ep in endpoints:
        sm = harness.summarize(ep.server.samples)
        med[ep.label] = sm["median_rps"]
        print(
            f"{ep.label:<18} {sm['median_rps']:>13,.0f} {sm['min_rps']:>10,.0f} {sm['max_rps']:>10,.0f} "
            f"{sm['p50_ms']:>8.2f} {sm['p99_ms']:>8.2f}"
        )
    print("(p50/p99 = median over rounds of wrk's per-run percentiles)")
    print()
    ratios = {}
    for num, den, what in RATIOS:
        name = f"{num}/{den}"
        ratios[name] = med[num] / med[den]
        print(f"{name + ' median req/s ratio:':<50} {ratios[name]:.2f}  ({what})")
    if any(x.errors for ep in endpoints for x in ep.server.samples):
        print("note: some runs reported socket errors (see round lines)")
    return ratios


def write_results(path: Path, machine: dict, config: dict, endpoints: list[Endpoint], ratios: dict[str, float]) -> None:
    samples = {ep.label: ep.server.samples for ep in endpoints}
    harness.write_json(path, {
        "benchmark": BENCHMARK,
        "finished_at": harness.utc_now(),
        "machine": machine,
        "config": config,
        "endpoints": {
            ep.label: {
                "path": ep.template,
                "env": ep.env,
                "summary": harness.summarize(ep.server.samples),
                "samples": [s.as_dict() for s in ep.server.samples],
            }
            for ep in endpoints
        },
        "ratios": ratios,
        "per_round_ratios": {
            f"{num}/{den}": [a.rps / b.rps for a, b in zip(samples[num], samples[den])] for num, den, _ in RATIOS
        },
        "ratio_workspace_over_hello": ratios["workspace/hello"],  # as in earlier results files
    })


def make_config(args: argparse.Namespace, db_name: str, endpoints: list[Endpoint]) -> dict:
    return {
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": WARMUP_SECONDS,
        "order": "interleaved A B C A B C: " + ", ".join(ep.label for ep in endpoints),
        "wrk": f"taskset -c {CLIENT_CORE} wrk -t{THREADS} -c{CONNECTIONS} -d{args.duration}s --latency",
        "server_core": SERVER_CORE,
        "client_core": CLIENT_CORE,
        "granian_flags": " ".join(GRANIAN_FLAGS),
        "servers": {
            ep.label: {"command": "python " + " ".join(ep.server.argv[1:]), "cwd": str(ep.server.cwd), "env": ep.env}
            for ep in endpoints
        },
        "app_env": {"DATABASE_URL": f"<fresh database {db_name}>"},
        "database": db_name,
        "tier": {"name": TIER, "limit": tier_limits(TIER)[0], "capacity": tier_limits(TIER)[1]},
    }


# --- main -------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.round_args(ap)
    return harness.check_round_args(ap, ap.parse_args())


def preflight() -> str | None:
    missing = missing_env()
    if missing:
        return (f"{', '.join(missing)} not set: run under "
                "`python -m storage.local_stack run -- ...` or `make bench`.")
    return harness.missing_tools()


def _sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def print_header(machine: dict, args: argparse.Namespace, db_name: str) -> None:
    print(__doc__.strip().split("\n\n")[0])
    print()
    harness.print_machine(machine)
    print(f"Pinning:    granian (1 worker) on core {SERVER_CORE}; wrk -t{THREADS} -c{CONNECTIONS} on core {CLIENT_CORE}")
    print(f"Granian:    {' '.join(GRANIAN_FLAGS)} (all three servers)")
    limit, capacity = tier_limits(TIER)
    print(f"Plan:       {args.rounds} rounds x {args.duration}s per endpoint, interleaved "
          f"hello/workspace/workspace-nolimit; {WARMUP_SECONDS}s warm-up each; database {db_name}; "
          f"{TIER} tier ({limit:,}/min, bucket {capacity:,})")
    print()


def setup_tenant(admin_dsn: str, db_name: str) -> tuple[str, int, str]:
    print(f"setup: creating database {db_name}", flush=True)
    applied = asyncio.run(create_database(admin_dsn, db_name))
    bench_dsn = with_database(admin_dsn, db_name)
    ws_id, key = asyncio.run(make_tenant(bench_dsn))
    print(f"setup: {len(applied)} migrations applied; {TIER} workspace {ws_id} with an all-scopes key", flush=True)
    return bench_dsn, ws_id, key


def cleanup(endpoints: list[Endpoint], admin_dsn: str, db_name: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave the database behind
    for ep in endpoints:
        harness.stop(ep.server)
    try:
        drop_database(admin_dsn, db_name)
        print(f"cleanup: dropped database {db_name}", flush=True)
    except Exception as exc:  # noqa: BLE001 - report, and say how to finish by hand
        print(f"warning: could not drop database {db_name}: {exc!r}; "
              f'drop it with DROP DATABASE "{db_name}" WITH (FORCE)', file=sys.stderr)


def run(args: argparse.Namespace, admin_dsn: str, db_name: str, endpoints: list[Endpoint]) -> dict[str, float]:
    bench_dsn, ws_id, key = setup_tenant(admin_dsn, db_name)
    endpoints.extend(build_endpoints(bench_dsn, ws_id, key))
    start_all(endpoints)
    run_rounds(endpoints, args.rounds, args.duration)
    print()
    return print_table(endpoints)


def main() -> int:
    args = parse_args()
    problem = preflight()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    admin_dsn, db_name = os.environ["DATABASE_URL"], f"sluice_bench_{os.getpid()}"
    machine = harness.machine_info(PACKAGES)
    print_header(machine, args, db_name)
    endpoints: list[Endpoint] = []
    try:
        ratios = run(args, admin_dsn, db_name, endpoints)
    except Refused as exc:
        print(f"\nREFUSED: {exc}, figures not counted")
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers and dropping the database", file=sys.stderr)
        return 130
    finally:
        cleanup(endpoints, admin_dsn, db_name)
    path = harness.results_path(BENCHMARK)
    write_results(path, machine, make_config(args, db_name, endpoints), endpoints, ratios)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
