"""Latency at a fixed offered load: vegeta (open loop) on core 1, corrected for coordinated omission.

wrk is closed loop: each connection waits for its answer before sending again, so a slow
server is offered less load and its slow moments go unrecorded. vegeta sends at a constant
rate whatever the server does. Its own latency starts when a request is actually sent, so a
request that waited for a free worker (vegeta caps them) would hide that wait; we therefore
recompute every latency from the moment the constant-rate schedule said the request was due
(request k of a rate R is due at ``began + (k + 1) / R``, vegeta's ConstantPacer), as wrk2 and
HdrHistogram do. ``send_lag_p99_ms`` says how late vegeta itself was: near zero means the
generator kept up; large means the figures show the generator, not the server.

* ``ensure_vegeta`` installs vegeta on first use (``go install``, into ``.services/bin``);
* ``write_targets`` writes a vegeta JSON targets file (a header or body per request, e.g. a
  random X-Forwarded-For for each pixel request);
* ``attack`` runs one fixed-rate attack pinned to core 1 and returns an ``OpenLoopSample``
  (corrected p50/p90/p99/max, vegeta's own CPU use, refusals);
* ``corrected_latencies`` / ``percentile``: the pure arithmetic, unit-tested.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from machine import CLIENT_CORE, ROOT

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"
BIN_DIR = ROOT / ".services" / "bin"
# Measured on this 2-core VM against hello-world: uncapped, vegeta opened thousands of
# connections past ~20k req/s and the run collapsed (4 s latencies, timeouts); capped at 256
# connections it held 30k req/s at 91% of one core. The cap costs no correctness: time spent
# waiting for a connection or a worker is counted by the schedule-based latency.
CONNECTIONS = 256
WORKERS = 64
MAX_WORKERS = 1024
TIMEOUT = "10s"


@dataclass
class OpenLoopSample:
    """One fixed-rate vegeta attack, its latencies measured from the schedule."""

    offered_rps: float
    achieved_rps: float  # answers / (last due time - first due time)
    requests: int
    non_2xx: int
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    vegeta_p99_ms: float  # vegeta's own (from the actual send), for comparison
    send_lag_p99_ms: float  # how late vegeta sent, p99: the generator's own delay
    vegeta_cpu_pct: float  # vegeta's user+sys CPU over the attack, % of one core
    duration_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def vegeta_path() -> Path | None:
    for candidate in (BIN_DIR / "vegeta", Path.home() / "go" / "bin" / "vegeta"):
        if candidate.exists():
            return candidate
    found = shutil.which("vegeta")
    return Path(found) if found else None


def ensure_vegeta() -> Path:
    """vegeta's path, installing it with `go install` on first use; SystemExit saying what to do."""
    path = vegeta_path()
    if path is not None:
        return path
    if shutil.which("go") is None:
        sys.exit(
            "error: vegeta is not installed and `go` is not on PATH. Install Go (e.g. apt-get install "
            f"golang) or vegeta itself, e.g. GOBIN={BIN_DIR} go install {VEGETA_MODULE}@{VEGETA_VERSION}"
        )
    print(f"[bench] installing vegeta {VEGETA_VERSION} (go install, first use only, ~30 s) into {BIN_DIR}", flush=True)
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["go", "install", f"{VEGETA_MODULE}@{VEGETA_VERSION}"], env={**os.environ, "GOBIN": str(BIN_DIR)}
    )
    path = vegeta_path()
    if res.returncode != 0 or path is None:
        sys.exit(
            f"error: `go install {VEGETA_MODULE}@{VEGETA_VERSION}` failed (rc {res.returncode}); "
            "check that the Go module proxy is reachable (GOPROXY) and retry"
        )
    print(f"[bench] vegeta installed: {path}", flush=True)
    return path


def target(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"") -> dict:
    doc = {"method": method, "url": url, "header": {k: [v] for k, v in (headers or {}).items()}}
    if body:
        doc["body"] = base64.b64encode(body).decode()
    return doc


def write_targets(path: Path, targets: Iterable[dict]) -> Path:
    """A vegeta JSON targets file (one target per line; vegeta cycles through them)."""
    with open(path, "w") as out:
        for t in targets:
            out.write(json.dumps(t, separators=(",", ":")) + "\n")
    return path


# --- the arithmetic ---------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n q / 100), at least 1
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def corrected_latencies(rows: list[tuple[int, int, int]], rate: float) -> tuple[list[float], list[float]]:
    """(latency from the schedule, lag of the send) in ms, for rows of (seq, sent_ns, latency_ns).

    Request k is due ``(k + 1) / rate`` after the attack began. The start itself is not in
    vegeta's output; sends are never early, so the smallest ``sent - (k + 1) / rate`` is it.
    """
    if not rows:
        return [], []
    interval = 1e9 / rate
    began = min(sent - (seq + 1) * interval for seq, sent, _ in rows)
    latencies, lags = [], []
    for seq, sent, latency in rows:
        due = began + (seq + 1) * interval
        latencies.append((sent + latency - due) / 1e6)
        lags.append((sent - due) / 1e6)
    return latencies, lags


def parse_results(csv_text: str) -> tuple[list[tuple[int, int, int]], int, dict[str, int]]:
    """vegeta's CSV encoding → (rows of (seq, sent_ns, latency_ns), non-2xx count, errors by text)."""
    rows, non_2xx, errors = [], 0, {}
    for rec in csv.reader(io.StringIO(csv_text)):
        sent, code, latency, error, seq = int(rec[0]), int(rec[1]), int(rec[2]), rec[5], int(rec[8])
        rows.append((seq, sent, latency))
        if not 200 <= code < 300:
            non_2xx += 1
            key = error or f"HTTP {code}"
            errors[key] = errors.get(key, 0) + 1
    return rows, non_2xx, errors


# --- running ----------------------------------------------------------------


def attack_argv(vegeta: Path, targets: Path, rate: int, duration: int, output: Path) -> list[str]:
    return [
        "taskset",
        "-c",
        CLIENT_CORE,
        str(vegeta),
        "attack",
        "-format=json",
        f"-targets={targets}",
        f"-rate={rate}/1s",
        f"-duration={duration}s",
        "-max-body=0",
        f"-timeout={TIMEOUT}",
        f"-workers={WORKERS}",
        f"-max-workers={MAX_WORKERS}",
        f"-connections={CONNECTIONS}",
        f"-max-connections={CONNECTIONS}",
        f"-output={output}",
    ]


def attack(targets: Path, rate: int, duration: int, workdir: Path) -> OpenLoopSample:
    """One attack at `rate` req/s for `duration` s; RuntimeError if vegeta fails."""
    vegeta = ensure_vegeta()
    output = workdir / "vegeta-results.bin"
    argv = attack_argv(vegeta, targets, rate, duration, output)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: vegeta's own CPU (taskset execs it)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"vegeta attack failed (rc={proc.returncode}): {err.strip()}")
    encoded = subprocess.run([str(vegeta), "encode", "--to", "csv", str(output)], capture_output=True, text=True)
    output.unlink(missing_ok=True)
    if encoded.returncode != 0:
        raise RuntimeError(f"vegeta encode failed: {encoded.stderr.strip()}")
    return summarize(encoded.stdout, rate, duration, (usage.ru_utime + usage.ru_stime) / elapsed * 100)


def summarize(csv_text: str, rate: int, duration: int, cpu_pct: float) -> OpenLoopSample:
    rows, non_2xx, errors = parse_results(csv_text)
    latencies, lags = corrected_latencies(rows, rate)
    own = sorted(latency / 1e6 for _, _, latency in rows)
    latencies.sort()
    lags.sort()
    span = (max(s for _, s, _ in rows) - min(s for _, s, _ in rows)) / 1e9 if len(rows) > 1 else 0
    return OpenLoopSample(
        offered_rps=rate,
        achieved_rps=round((len(rows) - 1) / span, 1) if span else 0.0,
        requests=len(rows),
        non_2xx=non_2xx,
        errors=errors,
        p50_ms=round(percentile(latencies, 50), 3),
        p90_ms=round(percentile(latencies, 90), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        max_ms=round(latencies[-1] if latencies else 0.0, 3),
        vegeta_p99_ms=round(percentile(own, 99), 3),
        send_lag_p99_ms=round(percentile(lags, 99), 3),
        vegeta_cpu_pct=round(cpu_pct, 1),
        duration_s=duration,
    )
