"""Shared machinery for the benchmarks in ``bench/``: servers, wrk, machine info.

* Servers run pinned to CPU core 0 (``taskset -c 0``), each in its own session
  so ``stop`` can signal the whole process group (granian forks its workers),
  with stdout/stderr in a temporary log whose tail is shown on failure.
* ``wait_ready`` polls one URL until a caller-given check accepts the answer,
  and names the server when it gives up.
* ``run_wrk`` runs ``wrk --latency`` pinned to core 1, with optional ``-H``
  headers and ``-s`` Lua script, and parses req/s, latency percentiles
  (p50/p90/p99, max), request count, socket errors and non-2xx responses.
* ``round_args`` / ``check_round_args`` / ``out_arg``: the shared ``--rounds/--duration/
  --quick/--out`` options; ``results_path`` / ``write_json``: where and how results are written.
* ``machine_info`` / ``print_machine`` (from ``bench/machine.py``): what the run ran on.

Stdlib only.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from machine import CLIENT_CORE, SERVER_CORE, machine_info, print_machine  # noqa: F401 - re-exported

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CONNECTIONS = 64
THREADS = 1
STARTUP_TIMEOUT = 30.0
# Every HTTP server of the benchmarks, hello-world and the app alike, runs with these flags.
GRANIAN_FLAGS = [
    "--interface",
    "asgi",
    "--loop",
    "uvloop",
    "--http",
    "1",
    "--no-ws",
    "--workers",
    "1",
    "--log-level",
    "warning",
]
RESULTS_DIR = BENCH_DIR / "results"
QUICK_SECONDS = 2  # make bench QUICK=1 must stay under 3 minutes in all

# (status, content-type, body) -> None when the answer is right, else what is wrong.
ReadyCheck = Callable[[int, str, bytes], "str | None"]


@dataclass
class Sample:
    """One wrk run, parsed."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> str:
        parts = [f"{k} {v}" for k, v in self.socket_errors.items() if v]
        if parts:
            parts = ["socket errors: " + ", ".join(parts)]
        if self.non_2xx:
            parts.append(f"non-2xx: {self.non_2xx}")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Server:
    """A server command line, where to run it and, once started, its process."""

    name: str
    argv: list[str]
    port: int
    cwd: Path = BENCH_DIR
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    samples: list[Sample] = field(default_factory=list)


# --- prerequisites ----------------------------------------------------------


def missing_tools() -> str | None:
    """Why the pinned wrk setup cannot run here, or None when it can."""
    if shutil.which("wrk") is None:
        return "`wrk` not found on PATH; install it (e.g. apt-get install wrk)."
    if shutil.which("taskset") is None:
        return "`taskset` not found on PATH (util-linux)."
    if (os.cpu_count() or 1) < 2:
        return "need at least 2 CPU cores (server on core 0, wrk on core 1)."
    return None


def preflight(required_env: tuple[str, ...]) -> str | None:
    """Why a benchmark on the local stack cannot run here (its variables unset, tools missing), or None.
    Also makes SIGTERM clean up as Ctrl-C does, and names the ASGI server of the run."""
    missing = [n for n in required_env if not os.environ.get(n)]
    if missing:
        return f"{', '.join(missing)} not set: run under `python -m storage.local_stack run -- ...` or `make bench`"
    problem = missing_tools()
    if problem is None:
        signal.signal(signal.SIGTERM, _sigterm)
        print(f"ASGI server: {asgi_server()} (BENCH_SERVER), one worker on core {SERVER_CORE}", flush=True)
    return problem


def begin(doc: str, required_env: tuple[str, ...], packages: list[str]) -> dict | None:
    """A benchmark's start: `preflight`, then its title (the first paragraph of `doc`) and the machine.
    Returns the machine record, or None after printing why the benchmark cannot run."""
    problem = preflight(required_env)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    machine = machine_info(packages)
    print(doc.strip().split("\n\n")[0] + "\n")
    print_machine(machine)
    return machine


def _sigterm(signum, frame):  # noqa: ARG001 - SIGTERM cleans up as Ctrl-C does
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_pythonpath(env: dict[str, str], *dirs: Path) -> dict[str, str]:
    """A copy of env with dirs prepended to PYTHONPATH."""
    out = dict(env)
    parts = [str(d) for d in dirs] + [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    out["PYTHONPATH"] = os.pathsep.join(parts)
    return out


# --- server processes -------------------------------------------------------


# BENCH_SERVER=uvicorn serves hello-world and the app alike with uvicorn instead (proxy headers
# off: the app reads X-Forwarded-For itself, from SLUICE_TRUSTED_PROXIES only).
UVICORN_FLAGS = [
    "--http",
    "httptools",
    "--loop",
    "uvloop",
    "--ws",
    "none",
    "--workers",
    "1",
    "--no-proxy-headers",
    "--no-access-log",
    "--log-level",
    "warning",
]
SERVERS = {"granian": GRANIAN_FLAGS, "uvicorn": UVICORN_FLAGS}


def asgi_server() -> str:
    """The ASGI server of this run: BENCH_SERVER, granian unless it says uvicorn."""
    name = os.environ.get("BENCH_SERVER") or "granian"
    if name not in SERVERS:
        raise SystemExit(f"BENCH_SERVER={name!r}: expected one of {', '.join(SERVERS)}")
    return name


def server_info() -> dict[str, str]:
    """What the results record of the server: its name and flags."""
    name = asgi_server()
    return {"server": name, "server_flags": " ".join(SERVERS[name])}


def server_argv(target: str, port: int, factory: bool) -> list[str]:
    """The command serving `target` (module:attribute, a factory when `factory`) on 127.0.0.1:port."""
    name = asgi_server()
    argv = [sys.executable, "-m", name, *SERVERS[name], "--host", "127.0.0.1", "--port", str(port)]
    return argv + (["--factory", target] if factory else [target])


def start(server: Server) -> None:
    """Launch the server on core 0, in its own session, logging to a temp file."""
    fd, log = tempfile.mkstemp(prefix=f"bench-{server.name}-", suffix=".log")
    os.close(fd)
    server.log_path = Path(log)
    env = server.env or with_pythonpath(dict(os.environ), server.cwd)
    with open(log, "wb") as out:
        # Own session: the terminal's Ctrl-C reaches us only, and we tear the
        # whole group (server plus forked workers) down ourselves.
        server.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *server.argv],
            cwd=server.cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def log_tail(server: Server, n: int = 20) -> str:
    if server.log_path is None or not server.log_path.exists():
        return "    (no log)"
    lines = server.log_path.read_text(errors="replace").splitlines()
    return "\n".join("    " + line for line in lines[-n:]) or "    (empty log)"


def ensure_alive(server: Server) -> None:
    """Exit with the log tail if the server process has ended."""
    if server.proc is not None and server.proc.poll() is not None:
        sys.exit(
            f"error: {server.name} exited with code {server.proc.returncode} "
            f"(port {server.port}). Log tail:\n{log_tail(server)}"
        )


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 1
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One GET on 127.0.0.1:port: (status, response headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _probe(port: int, path: str, headers: dict[str, str], check: ReadyCheck) -> str | None:
    status, resp_headers, body = http_get(port, path, headers)
    return check(status, resp_headers.get("content-type", ""), body)


def wait_ready(
    server: Server,
    path: str,
    check: ReadyCheck,
    headers: dict[str, str] | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> None:
    """Poll GET path until check accepts the answer; exit naming the server otherwise."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        ensure_alive(server)
        try:
            problem = _probe(server.port, path, headers or {}, check)
            if problem is None:
                return
            last = problem
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    sys.exit(
        f"error: {server.name} did not answer GET {path} correctly on "
        f"127.0.0.1:{server.port} within {timeout:.0f}s (last: {last}). "
        f"Log tail:\n{log_tail(server)}"
    )


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(server: Server) -> None:
    """SIGTERM the server's process group, SIGKILL after 5 s, remove the log."""
    proc, server.proc = server.proc, None
    if proc is None:
        return
    if proc.poll() is None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    _killpg(proc.pid, signal.SIGKILL)  # stragglers left in the group
    if server.log_path is not None:
        server.log_path.unlink(missing_ok=True)


# --- wrk --------------------------------------------------------------------

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def wrk_argv(
    url: str,
    duration: int,
    headers: dict[str, str] | None = None,
    script: str | Path | None = None,
    connections: int = CONNECTIONS,
    threads: int = THREADS,
) -> list[str]:
    argv = ["taskset", "-c", CLIENT_CORE, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    return argv + [url]


def _percentile(out: str, pct: int) -> float:
    m = re.search(rf"^\s*{pct}%\s+{_TIME}\s*$", out, re.M)
    if not m:
        raise ValueError(f"no {pct}% line")
    return _to_ms(*m.groups())


def _socket_errors(out: str) -> dict[str, int]:
    m = re.search(r"Socket errors:(.*)", out)
    if not m:
        return {}
    return {k: int(v) for k, v in re.findall(r"(\w+)\s+(\d+)", m.group(1))}


def parse_wrk(out: str) -> Sample:
    """Parse ``wrk --latency`` output; ValueError if a figure is missing."""
    m_rps = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    m_lat = re.search(rf"^\s*Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}", out, re.M)
    m_req = re.search(r"^\s*(\d+) requests in", out, re.M)
    if not (m_rps and m_lat and m_req):
        raise ValueError("missing Requests/sec, Latency or request count line")
    m_non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return Sample(
        rps=float(m_rps.group(1)),
        p50_ms=_percentile(out, 50),
        p90_ms=_percentile(out, 90),
        p99_ms=_percentile(out, 99),
        max_ms=_to_ms(m_lat.group(5), m_lat.group(6)),
        requests=int(m_req.group(1)),
        non_2xx=int(m_non2xx.group(1)) if m_non2xx else 0,
        socket_errors=_socket_errors(out),
    )


def start_wrk(
    url: str,
    duration: int,
    headers: dict[str, str] | None = None,
    script: str | Path | None = None,
    connections: int = CONNECTIONS,
    threads: int = THREADS,
) -> subprocess.Popen:
    """Start wrk on core 1 against url; `finish_wrk` waits for it and parses its output."""
    argv = wrk_argv(url, duration, headers, script, connections, threads)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(proc: subprocess.Popen) -> tuple[Sample, str]:
    try:
        out, err = proc.communicate()
    except BaseException:  # Ctrl-C / SIGTERM: leave no wrk (nor zombie) behind
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed (rc={proc.returncode}): {err.strip() or out}")
    try:
        return parse_wrk(out), out
    except ValueError as exc:
        raise RuntimeError(f"could not parse wrk output ({exc}):\n{out}\n{err}") from None


def run_wrk(
    url: str,
    duration: int,
    headers: dict[str, str] | None = None,
    script: str | Path | None = None,
    connections: int = CONNECTIONS,
    threads: int = THREADS,
) -> tuple[Sample, str]:
    """Run wrk on core 1 against url; return the parsed sample and raw output."""
    return finish_wrk(start_wrk(url, duration, headers, script, connections, threads))


# --- command line and results -----------------------------------------------


def round_args(ap: argparse.ArgumentParser, unit: str = "wrk run") -> None:
    """Add --rounds (min 3, default 3), --duration (default 10) and --quick."""
    ap.add_argument("--rounds", type=int, default=3, help="rounds per target (min 3, default 3)")
    ap.add_argument("--duration", type=int, default=10, help=f"seconds per {unit} (default 10)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s rounds (overrides --duration)")


def check_round_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.rounds < 3:
        ap.error("--rounds must be >= 3")
    args.duration = QUICK_SECONDS if args.quick else args.duration
    if args.duration < 1:
        ap.error("--duration must be >= 1")
    return args


def out_arg(ap: argparse.ArgumentParser, benchmark: str) -> None:
    """--out: where the results JSON goes (the suite collects each benchmark's into one file)."""
    ap.add_argument(
        "--out", type=Path, default=None, help=f"results file (default bench/results/<date>-<host>-{benchmark}.json)"
    )


def results_path(benchmark: str) -> Path:
    """bench/results/<YYYY-MM-DD>-<hostname>-<benchmark>.json"""
    return RESULTS_DIR / f"{datetime.date.today().isoformat()}-{socket.gethostname()}-{benchmark}.json"


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_json(path: Path, doc: dict) -> None:
    """Write doc as indented JSON, atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def save_results(out: Path | None, benchmark: str, doc: dict, stream: TextIO = sys.stdout) -> Path:
    """Write one benchmark's results (`benchmark`, `finished_at`, then `doc`) to --out or
    bench/results/<date>-<host>-<benchmark>.json, and say where."""
    path = out or results_path(benchmark)
    write_json(path, {"benchmark": benchmark, "finished_at": utc_now(), **doc})
    print(f"results: {path}", file=stream)
    return path


# --- summaries and machine info ---------------------------------------------


def summarize(samples: list[Sample]) -> dict[str, float]:
    """Median/min/max req/s and median p50/p90/p99 over rounds."""
    rps = [s.rps for s in samples]
    return {
        "median_rps": statistics.median(rps),
        "min_rps": min(rps),
        "max_rps": max(rps),
        "p50_ms": statistics.median(s.p50_ms for s in samples),
        "p90_ms": statistics.median(s.p90_ms for s in samples),
        "p99_ms": statistics.median(s.p99_ms for s in samples),
    }
