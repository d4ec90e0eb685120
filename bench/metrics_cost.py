"""What the API's metrics cost: pixel/track req/s with SLUICE_METRICS=on and off, interleaved in one run.

Two app servers, the same flags (granian, one worker, pinned to core 0 as every benchmark's),
differing only in SLUICE_METRICS, both on the real stack (Postgres, Redis, Kafka) with their
limits on: ``POST /api/v1/pixel/track`` with one event, from a random ``X-Forwarded-For`` per
request (the per-IP limit checked on every request, refusing none), ``wrk -t1 -c64`` on core 1.
Rounds alternate on, off, on, off, … (by default 10 rounds of 5 s: short rounds, many, so that
both sides see the same background); the cost is 1 − median(on) / median(off), and the median
of each round's pair. Each round also records the server's CPU time per request (its processes'
user + system time over the requests wrk saw answered), as req/s swing by tens of percent from
round to round on a machine shared with other work.
"On" observes per request what production does: the request counter and duration histogram,
the accepted event, the producer's records and acknowledgement time, written to
prometheus_client's multiprocess files.

Before counting, each server is checked: "on" counts the warm-up's requests in its /metrics,
"off" answers /metrics with 404. A round with any non-2xx answer is refused, not counted.

Usage::

    python -m storage.local_stack run -- python bench/metrics_cost.py [--quick] [--rounds 10 --duration 5]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
from dataclasses import dataclass, field

import harness
import payloads
from harness import CLIENT_CORE, CONNECTIONS, ROOT, THREADS, Server
from tenants import Scratch

BENCHMARK = "metrics_cost"
REQUIRED_ENV = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
PACKAGES = ["blacksheep", "granian", "uvloop", "prometheus-client", "aiokafka", "redis"]
HOST = "metrics.bench.example"
WARMUP_SECONDS = 2
DEFAULT_ROUNDS, DEFAULT_SECONDS = 10, 5  # short rounds, many: both sides see the same background
TARGET_COST = 0.03  # at most 3 % fewer req/s with metrics on


class Refused(Exception):
    """Non-2xx answers, or a server not doing what its setting says: the figures are not counted."""


@dataclass
class Side:
    setting: str  # SLUICE_METRICS
    server: Server
    samples: list = field(default_factory=list)
    cpu_us: list = field(default_factory=list)  # CPU microseconds per request, each round

    @property
    def median(self) -> float:
        return statistics.median(s.rps for s in self.samples)

    @property
    def median_cpu_us(self) -> float:
        return statistics.median(self.cpu_us)


def cpu_seconds(pid: int) -> float:
    """User + system time of `pid` and its children (granian's main process and its worker)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def start_side(setting: str, scratch: Scratch) -> Side:
    port = harness.free_port()
    env = harness.with_pythonpath({**scratch.env(), "SLUICE_METRICS": setting}, ROOT)
    side = Side(
        setting,
        Server(f"app-metrics-{setting}", harness.server_argv("app.main:create_app", port, True), port, ROOT, env),
    )
    print(f"start metrics {setting}: taskset -c {harness.SERVER_CORE} {' '.join(side.server.argv)}", flush=True)
    harness.start(side.server)
    harness.wait_ready(side.server, "/readyz", lambda st, ct, b: None if st == 200 else f"HTTP {st} {b[:200]!r}")
    return side


def counted_requests(side: Side) -> float | None:
    """pixel/track requests its /metrics counts; None when /metrics answers 404 (metrics off)."""
    status, _, body = harness.http_get(side.server.port, "/metrics", {}, timeout=10)
    if status == 404:
        return None
    if status != 200:
        raise Refused(f"metrics {side.setting}: /metrics answered HTTP {status}")
    prefix = 'sluice_http_requests_total{method="POST",route="/api/v1/pixel/track",status="200"} '
    return sum(float(line[len(prefix) :]) for line in body.decode().splitlines() if line.startswith(prefix))


def run(side: Side, script, duration: int) -> harness.Sample:
    harness.ensure_alive(side.server)
    assert side.server.proc is not None
    cpu = cpu_seconds(side.server.proc.pid)
    sample, _ = harness.run_wrk(f"http://127.0.0.1:{side.server.port}{payloads.TRACK}", duration, None, script)
    if sample.non_2xx or sample.socket_errors.get("timeout"):
        raise Refused(f"metrics {side.setting}: {sample.errors}")
    side.cpu_us.append((cpu_seconds(side.server.proc.pid) - cpu) / max(1, sample.requests) * 1e6)
    return sample


def warm_up_and_check(sides: list[Side], script) -> None:
    for side in sides:
        sample = run(side, script, WARMUP_SECONDS)
        counted = counted_requests(side)
        if side.setting == "on" and not counted:
            raise Refused("metrics on: /metrics counted none of the warm-up's requests")
        if side.setting == "off" and counted is not None:
            raise Refused("metrics off: /metrics still answers")
        seen = f"/metrics counts {counted:,.0f} track requests" if counted is not None else "/metrics answers 404"
        print(f"  metrics {side.setting:<3} warmed up {WARMUP_SECONDS} s ({sample.rps:,.0f} req/s), {seen}", flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.round_args(ap, "wrk run per side and round")
    harness.out_arg(ap, BENCHMARK)
    ap.set_defaults(rounds=DEFAULT_ROUNDS, duration=DEFAULT_SECONDS)
    return harness.check_round_args(ap, ap.parse_args())


def execute(args, scratch: Scratch, sides: list[Side]) -> dict:
    applied = scratch.create()
    tenant = scratch.add_tenant(keys=0, host=HOST)
    print(f"setup: database {scratch.name} ({applied} migrations), site {HOST} (workspace {tenant.workspace_id})")
    sides += [start_side("on", scratch), start_side("off", scratch)]
    script = payloads.pixel_script(scratch.workdir, HOST, 1)
    warm_up_and_check(sides, script)
    for side in sides:
        side.cpu_us.clear()
    print(f"\n{args.rounds} rounds x {args.duration} s, alternating on, off", flush=True)
    for r in range(1, args.rounds + 1):
        for side in sides:
            sample = run(side, script, args.duration)
            side.samples.append(sample)
            print(
                f"round {r}/{args.rounds}: metrics {side.setting:<3} {sample.rps:>9,.0f} req/s  "
                f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms  CPU {side.cpu_us[-1]:6.1f} µs/request",
                flush=True,
            )
    on, off = sides
    cost = 1 - on.median / off.median
    pairs = [1 - a.rps / b.rps for a, b in zip(on.samples, off.samples, strict=True)]
    cpu_pairs = [a / b - 1 for a, b in zip(on.cpu_us, off.cpu_us, strict=True)]
    cpu_cost = statistics.median(cpu_pairs)
    verdict = "within" if cost <= TARGET_COST else "OVER"
    print(
        f"\nmetrics on {on.median:,.0f} req/s, off {off.median:,.0f} req/s (medians): cost {cost:.1%} "
        f"({verdict} the {TARGET_COST:.0%} target); round by round {', '.join(f'{p:.1%}' for p in pairs)} "
        f"(median {statistics.median(pairs):.1%})\n"
        f"CPU per request: on {on.median_cpu_us:.1f} µs, off {off.median_cpu_us:.1f} µs (medians); round by round "
        f"{', '.join(f'{p:+.1%}' for p in cpu_pairs)} (median {cpu_cost:+.1%})"
    )
    return {
        "cost": cost,
        "cost_by_round": pairs,
        "median_cost_by_round": statistics.median(pairs),
        "cpu_us_per_request": {"on": on.cpu_us, "off": off.cpu_us},
        "cpu_cost": cpu_cost,
        "target_cost": TARGET_COST,
        "met": cost <= TARGET_COST,
    }


def main() -> int:
    args = parse_args()
    machine = harness.begin(__doc__, REQUIRED_ENV, PACKAGES)
    if machine is None:
        return 2
    scratch, sides = Scratch(os.environ["DATABASE_URL"]), []
    try:
        outcome = execute(args, scratch, sides)
    except Refused as exc:
        print(f"\nREFUSED: {exc}; figures not counted")
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers, dropping the database and topics", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for side in sides:
            harness.stop(side.server)
        for problem in scratch.cleanup():
            print(f"warning: {problem}", file=sys.stderr)
    harness.save_results(
        args.out,
        BENCHMARK,
        {
            "machine": machine,
            "config": {
                "rounds": args.rounds,
                "duration_s": args.duration,
                "order": "alternating: on, off",
                "wrk": f"taskset -c {CLIENT_CORE} wrk -t{THREADS} -c{CONNECTIONS}",
                "server_core": harness.SERVER_CORE,
                **harness.server_info(),
            },
            "sides": {
                side.setting: {
                    "summary": harness.summarize(side.samples),
                    "samples": [s.as_dict() for s in side.samples],
                }
                for side in sides
            },
            **outcome,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
