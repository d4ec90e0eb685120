"""Compare uvicorn and granian serving a bare BlackSheep hello-world endpoint.

What it measures: HTTP/1.1 keep-alive throughput (req/s) and latency (p50,
p99) of ``GET /hello`` -> ``{"hello": "world"}`` (orjson, application/json)
from ``bench/hello_app.py``, served by

* uvicorn  ``--http httptools --loop uvloop``  (one worker), and
* granian  ``--interface asgi --loop uvloop``  (one worker, one runtime thread),

with the server pinned to CPU core 0 and the load generator
(``wrk -t1 -c64 --latency``) pinned to core 1, so the two never compete for
the same core. Both servers are started once and kept running; rounds are
interleaved (uvicorn, granian, uvicorn, granian, ...) so machine noise hits
both alike. The summary reports the median/min/max req/s over rounds, the
median p50/p99 latency, and the granian/uvicorn ratio.

Stdlib only (process, wrk and machine helpers in ``bench/harness.py``); the
servers are launched with the same interpreter (``sys.executable -m uvicorn``
/ ``sys.executable -m granian``).

Usage::

    python bench/asgi_servers.py                # 3 rounds x 10 s each
    python bench/asgi_servers.py --quick        # 3 rounds x 3 s each
    python bench/asgi_servers.py --rounds 5 --duration 15
"""

from __future__ import annotations

import argparse
import signal
import sys

import harness
from harness import CLIENT_CORE, CONNECTIONS, SERVER_CORE, Server

APP_TARGET = "hello_app:app"
WARMUP_SECONDS = 2
EXPECTED_BODY = b'{"hello":"world"}'
PACKAGES = ["blacksheep", "uvicorn", "granian", "uvloop", "httptools", "orjson"]


def server_argv(name: str, port: int) -> list[str]:
    py = sys.executable
    if name == "uvicorn":
        return [
            py,
            "-m",
            "uvicorn",
            APP_TARGET,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    if name == "granian":
        return [
            py,
            "-m",
            "granian",
            APP_TARGET,
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--runtime-threads",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--no-ws",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    raise ValueError(name)


def hello_check(status: int, ctype: str, body: bytes) -> str | None:
    if status == 200 and body == EXPECTED_BODY and ctype.startswith("application/json"):
        return None
    return f"HTTP {status} content-type={ctype!r} body={body[:80]!r}"


def url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}/hello"


def _sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server (min 3, default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 s rounds (overrides --duration)")
    args = ap.parse_args()
    if args.rounds < 3:
        ap.error("--rounds must be >= 3")
    args.duration = 3 if args.quick else args.duration
    if args.duration < 1:
        ap.error("--duration must be >= 1")
    return args


def print_header(rounds: int, duration: int) -> None:
    print(__doc__.strip().split("\n\n")[0])
    print()
    harness.print_machine(harness.machine_info(PACKAGES))
    print(f"Pinning:    server (1 worker) on core {SERVER_CORE}; wrk -t1 -c{CONNECTIONS} on core {CLIENT_CORE}")
    print(
        f"Plan:       {rounds} rounds x {duration}s per server, interleaved "
        f"uvicorn/granian; both servers started once and kept running across "
        f"rounds; {WARMUP_SECONDS}s wrk warm-up per server after start"
    )
    print()


def start_all(servers: list[Server]) -> None:
    for s in servers:
        print(f"start {s.name}: taskset -c {SERVER_CORE} {' '.join(s.argv)}  (cwd={s.cwd})", flush=True)
        harness.start(s)
        harness.wait_ready(s, "/hello", hello_check)
        harness.run_wrk(url(s), WARMUP_SECONDS)
        print(f"  {s.name} ready on port {s.port}, warmed up {WARMUP_SECONDS}s", flush=True)
    print()


def run_rounds(servers: list[Server], rounds: int, duration: int) -> None:
    for r in range(1, rounds + 1):
        for s in servers:
            harness.ensure_alive(s)
            sample, _ = harness.run_wrk(url(s), duration)
            s.samples.append(sample)
            extra = f"  [{sample.errors}]" if sample.errors else ""
            print(
                f"round {r}/{rounds}: {s.name:<8} {sample.rps:>10,.0f} req/s  "
                f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms{extra}",
                flush=True,
            )


def print_summary(servers: list[Server]) -> None:
    print()
    hdr = f"{'server':<8} {'median req/s':>13} {'min':>10} {'max':>10} {'p50 ms':>8} {'p99 ms':>8}"
    print(hdr)
    print("-" * len(hdr))
    med = {}
    for s in servers:
        sm = harness.summarize(s.samples)
        med[s.name] = sm["median_rps"]
        print(
            f"{s.name:<8} {sm['median_rps']:>13,.0f} {sm['min_rps']:>10,.0f} {sm['max_rps']:>10,.0f} "
            f"{sm['p50_ms']:>8.2f} {sm['p99_ms']:>8.2f}"
        )
    print("(p50/p99 = median over rounds of wrk's per-run percentiles)")
    ratio = med["granian"] / med["uvicorn"]
    print()
    print(f"granian/uvicorn median req/s ratio: {ratio:.2f}x")
    if any(x.errors for s in servers for x in s.samples):
        print("note: some runs reported socket errors / non-2xx responses (see round lines)")
    faster = "granian" if ratio > 1 else "uvicorn"
    print(f"faster: {faster} (by {abs(ratio - 1) * 100:.0f}% on median req/s)")


def main() -> int:
    args = parse_args()
    problem = harness.missing_tools()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    print_header(args.rounds, args.duration)
    servers = []
    for name in ("uvicorn", "granian"):
        port = harness.free_port()
        servers.append(Server(name, server_argv(name, port), port))
    try:
        start_all(servers)
        run_rounds(servers, args.rounds, args.duration)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        for s in servers:
            harness.stop(s)
    print_summary(servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
