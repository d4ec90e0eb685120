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

Stdlib only; the servers are launched with the same interpreter
(``sys.executable -m uvicorn`` / ``sys.executable -m granian``).

Usage::

    python bench/asgi_servers.py                # 3 rounds x 10 s each
    python bench/asgi_servers.py --quick        # 3 rounds x 3 s each
    python bench/asgi_servers.py --rounds 5 --duration 15
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
APP_TARGET = "hello_app:app"
SERVER_CORE = "0"
CLIENT_CORE = "1"
CONNECTIONS = 64
WARMUP_SECONDS = 2
STARTUP_TIMEOUT = 30.0
EXPECTED_BODY = b'{"hello":"world"}'


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str = ""


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    samples: list[Sample] = field(default_factory=list)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(name: str, port: int) -> list[str]:
    py = sys.executable
    if name == "uvicorn":
        return [
            py, "-m", "uvicorn", APP_TARGET,
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
            "--http", "httptools", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning",
        ]
    if name == "granian":
        return [
            py, "-m", "granian", APP_TARGET,
            "--interface", "asgi",
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--runtime-threads", "1",
            "--loop", "uvloop",
            "--http", "1", "--no-ws",
            "--no-access-log", "--log-level", "warning",
        ]
    raise ValueError(name)


def start(server: Server) -> None:
    fd, log = tempfile.mkstemp(prefix=f"bench-{server.name}-", suffix=".log")
    os.close(fd)
    server.log_path = Path(log)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p
    )
    with open(log, "wb") as out:
        # Own session/process group so cleanup can signal the server and any
        # worker processes it forks, and so the terminal's Ctrl-C reaches us
        # first (we then tear the group down ourselves).
        server.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *server.argv],
            cwd=BENCH_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def log_tail(server: Server, n: int = 20) -> str:
    if server.log_path is None or not server.log_path.exists():
        return "(no log)"
    lines = server.log_path.read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in lines[-n:]) or "    (empty log)"


def wait_ready(server: Server, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last_err = "no attempt"
    while time.monotonic() < deadline:
        assert server.proc is not None
        if server.proc.poll() is not None:
            sys.exit(
                f"error: {server.name} exited with code {server.proc.returncode} "
                f"before answering on port {server.port}. Log tail:\n{log_tail(server)}"
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1)
            conn.request("GET", "/hello")
            resp = conn.getresponse()
            body = resp.read()
            ctype = resp.getheader("content-type", "")
            conn.close()
            if resp.status == 200 and body == EXPECTED_BODY and ctype.startswith("application/json"):
                return
            last_err = f"HTTP {resp.status} content-type={ctype!r} body={body[:80]!r}"
        except OSError as exc:
            last_err = repr(exc)
        time.sleep(0.1)
    sys.exit(
        f"error: {server.name} did not answer GET /hello correctly on "
        f"127.0.0.1:{server.port} within {timeout:.0f}s (last: {last_err}). "
        f"Log tail:\n{log_tail(server)}"
    )


def stop(server: Server) -> None:
    proc = server.proc
    if proc is None:
        return
    server.proc = None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    # Any straggler workers left in the group (e.g. parent exited first).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if server.log_path is not None:
        try:
            server.log_path.unlink()
        except OSError:
            pass


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def run_wrk(port: int, duration: int) -> tuple[Sample, str]:
    cmd = [
        "taskset", "-c", CLIENT_CORE,
        "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency",
        f"http://127.0.0.1:{port}/hello",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    out = res.stdout
    if res.returncode != 0:
        raise RuntimeError(f"wrk failed (rc={res.returncode}): {res.stderr.strip() or out}")
    m_rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    m_p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    m_p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    if not (m_rps and m_p50 and m_p99):
        raise RuntimeError(f"could not parse wrk output:\n{out}\n{res.stderr}")
    errors = []
    m_sock = re.search(r"Socket errors:.*", out)
    if m_sock:
        errors.append(m_sock.group(0).strip())
    m_non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m_non2xx:
        errors.append(f"non-2xx: {m_non2xx.group(1)}")
    sample = Sample(
        rps=float(m_rps.group(1)),
        p50_ms=_to_ms(*m_p50.groups()),
        p99_ms=_to_ms(*m_p99.groups()),
        errors="; ".join(errors),
    )
    return sample, out


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server (min 3, default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 s rounds (overrides --duration)")
    args = ap.parse_args()
    if args.rounds < 3:
        ap.error("--rounds must be >= 3")
    duration = 3 if args.quick else args.duration
    if duration < 1:
        ap.error("--duration must be >= 1")

    if shutil.which("wrk") is None:
        print("error: `wrk` not found on PATH; install it (e.g. apt-get install wrk).", file=sys.stderr)
        return 2
    if shutil.which("taskset") is None:
        print("error: `taskset` not found on PATH (util-linux).", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("error: need at least 2 CPU cores (server on core 0, wrk on core 1).", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _sigterm)

    print(__doc__.strip().split("\n\n")[0])
    print()
    print(f"CPU:        {cpu_model()} ({os.cpu_count()} logical cores)")
    print(f"Python:     {platform.python_version()} ({sys.executable})")
    print(
        f"Versions:   blacksheep {version('blacksheep')}, uvicorn {version('uvicorn')}, "
        f"granian {version('granian')}, uvloop {version('uvloop')}, "
        f"httptools {version('httptools')}, orjson {version('orjson')}"
    )
    print(f"Pinning:    server (1 worker) on core {SERVER_CORE}; wrk -t1 -c{CONNECTIONS} on core {CLIENT_CORE}")
    print(
        f"Plan:       {args.rounds} rounds x {duration}s per server, interleaved "
        f"uvicorn/granian; both servers started once and kept running across "
        f"rounds; {WARMUP_SECONDS}s wrk warm-up per server after start"
    )
    print()

    servers = [Server("uvicorn", [], 0), Server("granian", [], 0)]
    for s in servers:
        s.port = free_port()
        s.argv = server_argv(s.name, s.port)
    try:
        for s in servers:
            print(f"start {s.name}: taskset -c {SERVER_CORE} {' '.join(s.argv)}  (cwd={BENCH_DIR})", flush=True)
            start(s)
            wait_ready(s)
            run_wrk(s.port, WARMUP_SECONDS)
            print(f"  {s.name} ready on port {s.port}, warmed up {WARMUP_SECONDS}s", flush=True)
        print()
        for r in range(1, args.rounds + 1):
            for s in servers:
                assert s.proc is not None
                if s.proc.poll() is not None:
                    sys.exit(f"error: {s.name} died (rc={s.proc.returncode}). Log tail:\n{log_tail(s)}")
                sample, _ = run_wrk(s.port, duration)
                s.samples.append(sample)
                extra = f"  [{sample.errors}]" if sample.errors else ""
                print(
                    f"round {r}/{args.rounds}: {s.name:<8} {sample.rps:>10,.0f} req/s  "
                    f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms{extra}",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        for s in servers:
            stop(s)

    print()
    hdr = f"{'server':<8} {'median req/s':>13} {'min':>10} {'max':>10} {'p50 ms':>8} {'p99 ms':>8}"
    print(hdr)
    print("-" * len(hdr))
    med = {}
    for s in servers:
        rps = [x.rps for x in s.samples]
        med[s.name] = statistics.median(rps)
        print(
            f"{s.name:<8} {med[s.name]:>13,.0f} {min(rps):>10,.0f} {max(rps):>10,.0f} "
            f"{statistics.median(x.p50_ms for x in s.samples):>8.2f} "
            f"{statistics.median(x.p99_ms for x in s.samples):>8.2f}"
        )
    print("(p50/p99 = median over rounds of wrk's per-run percentiles)")
    ratio = med["granian"] / med["uvicorn"]
    print()
    print(f"granian/uvicorn median req/s ratio: {ratio:.2f}x")
    if any(x.errors for s in servers for x in s.samples):
        print("note: some runs reported socket errors / non-2xx responses (see round lines)")
    faster = "granian" if ratio > 1 else "uvicorn"
    print(f"faster: {faster} (by {abs(ratio - 1) * 100:.0f}% on median req/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
