"""What a benchmark ran on: CPU model, cores, OS, Python, package and tool versions, pinning.

Recorded with every result (``machine_info``) and printed at the top of every run
(``print_machine``), so a figure is never read without the machine it came from. The
services' versions (Postgres, Redis, Kafka) are added by the suite (``service_versions``),
which runs on the stack; this module itself needs nothing but the stdlib.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = "0"
CLIENT_CORE = "1"
# The server is bench/harness.py asgi_server()'s (BENCH_SERVER); harness imports this module.
PINNING = (
    f"servers ({os.environ.get('BENCH_SERVER') or 'granian'}, 1 worker) pinned to core {SERVER_CORE}; "
    f"load generators (wrk, vegeta) and Python clients pinned to core {CLIENT_CORE}; "
    "Postgres, Redis, Kafka and the ingest worker unpinned"
)


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


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not found"
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (res.stdout or res.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def wrk_version() -> str:
    return _first_line(["wrk", "-v"]).split(" Copyright")[0]


def vegeta_version() -> str:
    import openloop  # late: openloop imports this module's pinning

    path = openloop.vegeta_path()
    if path is None:
        return "vegeta not installed"
    # `go install` stamps no -version; the module version is in the build info.
    info = ""
    if shutil.which("go"):
        info = subprocess.run(["go", "version", "-m", str(path)], capture_output=True, text=True).stdout
    m = re.search(r"^\s*mod\s+\S*vegeta\S*\s+(v\S+)", info, re.M)
    runtime = re.search(r": (go[\d.]+)", info)
    return f"vegeta {m.group(1)} ({runtime.group(1)})" if m and runtime else "vegeta (version unknown)"


def kafka_version() -> str:
    """The Kafka release the local stack runs: the one pinned in storage/kafka/pom.xml."""
    try:
        pom = (ROOT / "storage" / "kafka" / "pom.xml").read_text()
    except OSError:
        return "unknown"
    m = re.search(r"<artifactId>kafka[^<]*</artifactId>\s*<version>([^<]+)</version>", pom)
    return m.group(1) if m else "unknown"


def machine_info(packages: list[str]) -> dict:
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "wrk": wrk_version(),
        "vegeta": vegeta_version(),
        "pinning": PINNING,
        "packages": {name: version(name) for name in packages},
    }


async def service_versions() -> dict[str, str]:
    """Postgres and Redis server versions from DATABASE_URL/REDIS_URL; Kafka's from the stack's pin."""
    import asyncpg
    import redis.asyncio as aioredis

    out = {"kafka": kafka_version()}
    try:
        conn = await asyncpg.connect(os.environ["DATABASE_URL"])
        try:
            out["postgres"] = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    except Exception as exc:  # noqa: BLE001 - a version is information, not a reason to stop
        out["postgres"] = f"unknown ({exc.__class__.__name__})"
    try:
        client = aioredis.from_url(os.environ["REDIS_URL"])
        try:
            out["redis"] = (await client.info("server"))["redis_version"]
        finally:
            await client.aclose()
    except Exception as exc:  # noqa: BLE001
        out["redis"] = f"unknown ({exc.__class__.__name__})"
    return out


def print_machine(info: dict) -> None:
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    print(f"CPU:        {info['cpu_model']} ({info['logical_cores']} logical cores)")
    print(f"Python:     {info['python']} ({info['python_executable']})")
    print(f"Versions:   {pkgs}; {info['wrk']}; {info.get('vegeta', '')}")
    if info.get("services"):
        print("Services:   " + ", ".join(f"{k} {v}" for k, v in info["services"].items()))
    print(f"Pinning:    {info['pinning']}")
