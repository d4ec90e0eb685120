"""The API's hot endpoints next to a bare hello-world: req/s at saturation, latency at fixed loads.

What it measures, on the real stack (Postgres, Redis, Kafka), each endpoint with its limits on:

* ``hello``: ``GET /hello`` of ``bench/hello_app.py``, the ceiling: BlackSheep on granian;
* ``pixel``: ``POST /api/v1/pixel/track`` with one event, from a random ``X-Forwarded-For``
  (10.0.0.0/8) per request through the trusted proxy 127.0.0.1: the per-IP limit (300/min)
  is checked on every request and refuses none;
* ``pixel-batch50``: the same with a batch of 50 events per request;
* ``workspace``: authenticated ``GET /api/v1/workspaces/{id}``, key rate limiter on
  (enterprise tier, the load rotating over 32 keys);
* ``usage``: ``POST /api/v1/entitlements/usage`` ``{"feature":"api_calls","quantity":1}``
  (scope entitlements:write, the workspace's quota raised so nothing is refused).

1. Throughput: ``wrk -t1 -c64`` on core 1, the two granian servers (same flags, one worker)
   on core 0; rounds interleaved A B C D E A B C D E; medians; ratio = endpoint / hello.
2. Latency at a fixed offered load: vegeta (open loop, bench/openloop.py) at 50% and 80% of
   each endpoint's measured median, p50/p90/p99/max from the schedule (coordinated omission
   corrected), after 3 s idle each (quick: 1 s). hello is not offered one: 80% of it is past what vegeta
   sends from one core.

A run with any non-2xx answer for an endpoint is reported as refused and not counted. No
ingest worker runs (the events wait in this run's Kafka topics, deleted at the end): that
path is bench/pixel_e2e.py's. Database, topics and counters are this run's own, removed after.

Usage::

    python -m storage.local_stack run -- python bench/http_api.py [--quick] [--rounds 3 --duration 10]
        [--only pixel,workspace] [--latency-duration 10] [--no-latency] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness
import openloop
import payloads
from harness import BENCH_DIR, CLIENT_CORE, CONNECTIONS, ROOT, THREADS, Server
from tenants import KEYS, TIER, Scratch, Tenant

sys.path.insert(0, str(ROOT))

from app.access.rate_limits import tier_limits  # noqa: E402

BENCHMARK = "http_api"
REQUIRED_ENV = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
PACKAGES = ["blacksheep", "granian", "uvicorn", "uvloop", "orjson", "asyncpg", "redis", "aiokafka"]
LABELS = ("hello", "pixel", "pixel-batch50", "workspace", "usage")
LOADS = (0.5, 0.8)
WARMUP_SECONDS = 1
# Idle time before each latency run: pixel batches leave the app slow for a few seconds (p99
# of GET workspace right after 8 s of batches: 152 ms, after 10 s idle: 11 ms, at 3,700 req/s),
# which would be charged to the next endpoint.
SETTLE_SECONDS, QUICK_SETTLE_SECONDS = 3, 1
HOST = "bench.example"
BATCH = 50
USAGE_BODY = '{"feature":"api_calls","quantity":1}'


class Refused(Exception):
    """Non-2xx answers: the endpoint's figures are not counted."""


@dataclass
class Endpoint:
    label: str
    server: Server
    method: str
    path: str
    events: int  # events per request (pixel), else 0
    targets: Path  # vegeta targets file
    script: Path | None = None  # wrk Lua script; None: plain GET
    samples: list = field(default_factory=list)
    latency: dict = field(default_factory=dict)  # "50%" -> OpenLoopSample
    refused: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}{self.path}"

    def first_request(self) -> tuple[str, dict[str, str], bytes]:
        doc = json.loads(self.targets.read_text().split("\n", 1)[0])
        body = base64.b64decode(doc.get("body", ""))
        return doc["method"], {k: v[0] for k, v in doc["header"].items()}, body


# --- endpoints --------------------------------------------------------------


def build_endpoints(scratch: Scratch, tenant: Tenant, only: set[str]) -> list[Endpoint]:
    env, work = scratch.env(), scratch.workdir
    port = harness.free_port()
    hello_server = Server(
        "hello",
        harness.server_argv("hello_app:app", port, False),
        port,
        BENCH_DIR,
        harness.with_pythonpath(env, BENCH_DIR),
    )
    hello_targets = openloop.write_targets(
        work / "hello.targets", [openloop.target("GET", f"http://127.0.0.1:{port}/hello")]
    )
    port = harness.free_port()
    app = Server(
        "app", harness.server_argv("app.main:create_app", port, True), port, ROOT, harness.with_pythonpath(env, ROOT)
    )
    base = f"http://127.0.0.1:{port}"
    track, ws_path, usage = payloads.TRACK, f"/api/v1/workspaces/{tenant.workspace_id}", "/api/v1/entitlements/usage"
    out = [Endpoint("hello", hello_server, "GET", "/hello", 0, hello_targets)]
    for label, batch in (("pixel", 1), (f"pixel-batch{BATCH}", BATCH)):
        if label in only:
            out.append(
                Endpoint(
                    label,
                    app,
                    "POST",
                    track,
                    batch,
                    payloads.pixel_targets(work, base, HOST, batch),
                    payloads.pixel_script(work, HOST, batch),
                )
            )
    for label, method, path, body in (("workspace", "GET", ws_path, None), ("usage", "POST", usage, USAGE_BODY)):
        if label in only:
            script, targets = payloads.auth_files(work, label, method, base, path, tenant.keys, body)
            out.append(Endpoint(label, app, method, path, 0, targets, script))
    return out


# --- servers and checks -----------------------------------------------------


def probe(ep: Endpoint) -> tuple[int, http.client.HTTPMessage, bytes]:
    method, headers, body = ep.first_request()
    conn = http.client.HTTPConnection("127.0.0.1", ep.server.port, timeout=10)
    try:
        conn.request(method, ep.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def check_answer(ep: Endpoint) -> str:
    """One request of the endpoint answers as a client expects; what the limiter says, if any."""
    status, headers, body = probe(ep)
    if not 200 <= status < 300:
        raise Refused(f"{ep.label}: {ep.method} {ep.path} answered HTTP {status}: {body[:200]!r}")
    if ep.label == "usage" and not json.loads(body).get("recorded"):
        raise Refused(f"usage: not recorded: {body[:200]!r}")
    remaining = headers.get("X-RateLimit-Remaining")
    if ep.label in ("workspace", "usage"):
        limit, capacity = tier_limits(TIER)
        if headers.get("X-RateLimit-Limit") != str(capacity) or remaining is None:
            raise Refused(
                f"{ep.label}: no {TIER} rate limit headers (X-RateLimit-Limit "
                f"{headers.get('X-RateLimit-Limit')!r}): is the limiter off?"
            )
        return f", key limiter on ({limit:,}/min, {remaining} of {capacity:,} left on key 1)"
    return ""


def start_servers(endpoints: list[Endpoint]) -> None:
    started = set()
    for ep in endpoints:
        s = ep.server
        if s.name not in started:
            print(f"start {s.name}: taskset -c {harness.SERVER_CORE} {' '.join(s.argv)}", flush=True)
            harness.start(s)
            ready = "/hello" if s.name == "hello" else "/readyz"
            harness.wait_ready(s, ready, lambda st, ct, b: None if st == 200 else f"HTTP {st} {b[:200]!r}")
            started.add(s.name)
        check_answer(ep)
        measure(ep, WARMUP_SECONDS)
        seen = check_answer(ep)
        print(f"  {ep.label:<14} ready, one request checked, warmed up {WARMUP_SECONDS}s{seen}", flush=True)


# --- measuring --------------------------------------------------------------


def measure(ep: Endpoint, duration: int) -> harness.Sample:
    harness.ensure_alive(ep.server)
    sample, _ = harness.run_wrk(ep.url, duration, None, ep.script)
    if sample.non_2xx or sample.socket_errors.get("timeout"):
        raise Refused(f"{ep.label}: {sample.errors}")
    return sample


def run_rounds(endpoints: list[Endpoint], rounds: int, duration: int) -> None:
    for r in range(1, rounds + 1):
        for ep in endpoints:
            if ep.refused:
                continue
            try:
                sample = measure(ep, duration)
            except Refused as exc:
                ep.refused = str(exc)
                print(f"round {r}/{rounds}: {ep.label:<14} REFUSED ({exc}); not counted", flush=True)
                continue
            ep.samples.append(sample)
            events = f" = {sample.rps * ep.events:>9,.0f} events/s" if ep.events > 1 else ""
            print(
                f"round {r}/{rounds}: {ep.label:<14} {sample.rps:>9,.0f} req/s{events}  "
                f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms",
                flush=True,
            )


def run_latency(endpoints: list[Endpoint], duration: int, settle: int, workdir: Path) -> None:
    for load in LOADS:
        for ep in endpoints:
            if ep.label == "hello" or ep.refused or not ep.samples:
                continue
            rate = max(1, int(load * harness.summarize(ep.samples)["median_rps"]))
            harness.ensure_alive(ep.server)
            time.sleep(settle)
            s = openloop.attack(ep.targets, rate, duration, workdir)
            key = f"{load:.0%}"
            ep.latency[key] = s
            verdict = f"  REFUSED: {s.non_2xx} non-2xx {s.errors}" if s.non_2xx else ""
            print(
                f"latency at {key} ({rate:>7,} req/s offered, {s.achieved_rps:>9,.0f} sent): {ep.label:<14} "
                f"p50 {s.p50_ms:7.2f}  p90 {s.p90_ms:7.2f}  p99 {s.p99_ms:7.2f}  max {s.max_ms:7.1f} ms  "
                f"(vegeta {s.vegeta_cpu_pct:.0f}% CPU, send lag p99 {s.send_lag_p99_ms:.2f} ms){verdict}",
                flush=True,
            )


# --- reporting --------------------------------------------------------------


def print_table(endpoints: list[Endpoint]) -> dict[str, float]:
    hello = harness.summarize(endpoints[0].samples)["median_rps"] if endpoints[0].samples else None
    hdr = f"{'endpoint':<14} {'median req/s':>12} {'events/s':>10} {'/ hello':>8} " + "".join(
        f"{'p99 @' + k:>10}" for k in (f"{x:.0%}" for x in LOADS)
    )
    print("\n" + hdr + "\n" + "-" * len(hdr))
    ratios = {}
    for ep in endpoints:
        if ep.refused or not ep.samples:
            print(f"{ep.label:<14} REFUSED: {ep.refused}")
            continue
        med = harness.summarize(ep.samples)["median_rps"]
        if hello and ep.label != "hello":
            ratios[ep.label] = med / hello
        events = f"{med * ep.events:>10,.0f}" if ep.events else f"{'':>10}"
        ratio = f"{ratios[ep.label]:>8.2f}" if ep.label in ratios else f"{'':>8}"
        lat = "".join(
            f"{ep.latency[k].p99_ms:>8.2f}ms" if k in ep.latency else f"{'':>10}" for k in (f"{x:.0%}" for x in LOADS)
        )
        print(f"{ep.label:<14} {med:>12,.0f} {events} {ratio} {lat}")
    print("(req/s: wrk, median over rounds; p99: vegeta at that share of the endpoint's median req/s)")
    return ratios


def result_doc(args, machine: dict, endpoints: list[Endpoint], ratios: dict[str, float]) -> dict:
    return {
        "machine": machine,
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "latency_duration_s": args.latency_duration,
            "loads": list(LOADS),
            "warmup_s": WARMUP_SECONDS,
            "settle_before_latency_s": args.settle,
            "wrk": f"taskset -c {CLIENT_CORE} wrk -t{THREADS} -c{CONNECTIONS} --latency",
            "vegeta": " ".join(openloop.attack_argv(Path("vegeta"), Path("T"), 0, 0, Path("O"))[3:]),
            **harness.server_info(),
            "tier": TIER,
            "keys": KEYS,
            "order": "interleaved: " + " ".join(ep.label for ep in endpoints),
        },
        "endpoints": {
            ep.label: {
                "method": ep.method,
                "path": ep.path if ep.label != "workspace" else "/api/v1/workspaces/{id}",
                "events_per_request": ep.events,
                "refused": ep.refused,
                "summary": harness.summarize(ep.samples) if ep.samples else None,
                "samples": [s.as_dict() for s in ep.samples],
                "latency": {k: v.as_dict() for k, v in ep.latency.items()},
            }
            for ep in endpoints
        },
        "ratios_to_hello": ratios,
    }


# --- main -------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.round_args(ap)
    harness.out_arg(ap, BENCHMARK)
    ap.add_argument("--only", default=",".join(LABELS[1:]), help="endpoints besides hello (default: all)")
    ap.add_argument("--latency-duration", type=int, default=None, help="seconds per vegeta run (default 10; quick 2)")
    ap.add_argument("--no-latency", action="store_true", help="skip the fixed-load latency runs")
    args = harness.check_round_args(ap, ap.parse_args())
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    if args.only - set(LABELS):
        ap.error(
            f"--only: unknown endpoint(s) {', '.join(sorted(args.only - set(LABELS)))}; known: {', '.join(LABELS)}"
        )
    if args.latency_duration is None:
        args.latency_duration = 2 if args.quick else 10
    args.settle = QUICK_SETTLE_SECONDS if args.quick else SETTLE_SECONDS
    return args


def execute(args, scratch: Scratch, endpoints: list[Endpoint]) -> dict[str, float]:
    applied = scratch.create()
    tenant = scratch.add_tenant(host=HOST)
    print(
        f"setup: database {scratch.name} ({applied} migrations); {TIER} workspace {tenant.workspace_id} "
        f"with site {HOST}, {len(tenant.keys)} all-scopes keys, api_calls quota raised",
        flush=True,
    )
    endpoints.extend(build_endpoints(scratch, tenant, args.only))
    start_servers(endpoints)
    print(f"\nthroughput: {args.rounds} rounds x {args.duration}s, interleaved", flush=True)
    run_rounds(endpoints, args.rounds, args.duration)
    if not args.no_latency:
        openloop.ensure_vegeta()
        print(
            f"\nlatency at fixed offered load ({', '.join(f'{x:.0%}' for x in LOADS)} of each median), "
            f"vegeta {args.latency_duration}s each, open loop",
            flush=True,
        )
        run_latency(endpoints, args.latency_duration, args.settle, scratch.workdir)
    return print_table(endpoints)


def main() -> int:
    args = parse_args()
    machine = harness.begin(__doc__, REQUIRED_ENV, PACKAGES)
    if machine is None:
        return 2
    if not args.no_latency:
        openloop.ensure_vegeta()
    print()
    scratch, endpoints = Scratch(os.environ["DATABASE_URL"]), []
    try:
        ratios = execute(args, scratch, endpoints)
    except Refused as exc:
        print(f"\nREFUSED: {exc}; figures not counted")
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers, dropping the database and topics", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for s in {id(ep.server): ep.server for ep in endpoints}.values():
            harness.stop(s)
        for problem in scratch.cleanup():
            print(f"warning: {problem}", file=sys.stderr)
    harness.save_results(args.out, BENCHMARK, result_doc(args, machine, endpoints, ratios))
    return 1 if any(ep.refused for ep in endpoints) else 0


if __name__ == "__main__":
    sys.exit(main())
