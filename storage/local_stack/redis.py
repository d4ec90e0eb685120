"""Redis for the stack: find or install redis-server, start it daemonized, check it answers, stop it.

Data lives in .services/redis/ (AOF on, RDB snapshots off).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time

from .processes import alive, not_up, read_pid, terminate, wait_gone, wait_until
from .reporting import StackError, say
from .state import HOST, known_port, state_path
from .state import port as persisted_port

READY_TIMEOUT = 20
STOP_TIMEOUT = 20
APT_PACKAGE = "redis-server"


def _binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)), None
    )


def installed() -> bool:
    return bool(_binary())


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")  # -LOADING while replaying the AOF
    except OSError:
        return False


def pid() -> int | None:
    return read_pid(state_path("redis.pid"))


def running() -> bool:
    port = known_port("redis")
    if not port:
        return False
    return alive(pid(), "redis-server") and _answers(port)


def start() -> None:
    binary = _binary()
    if not binary:
        raise StackError("redis-server not found; run: apt-get install -y redis-server")
    port = persisted_port("redis")
    state_path("redis").mkdir(exist_ok=True)
    pidfile, log = state_path("redis.pid"), state_path("redis.log")
    pidfile.unlink(missing_ok=True)  # stale: running() said no
    say(f"redis: starting on {HOST}:{port}...")
    started = time.monotonic()
    # AOF on, RDB snapshots off: every write is logged, no surprise fork+dump pauses in tests.
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--dir",
        str(state_path("redis")),
        "--daemonize",
        "yes",
        "--pidfile",
        str(pidfile),
        "--logfile",
        str(log),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]
    if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        raise not_up("redis", port, log, why=f"refused to start on {HOST}:{port}")
    wait_until(lambda: _answers(port), "redis", port, log, READY_TIMEOUT)
    say(f"redis: ready in {time.monotonic() - started:.1f} s")


def stop() -> None:
    server = pid()
    if server is None or not alive(server, "redis-server"):
        state_path("redis.pid").unlink(missing_ok=True)
        return
    say("redis: stopping...")
    port = known_port("redis")
    with contextlib.suppress(OSError):
        with socket.create_connection((HOST, port), timeout=2) as sock:
            # NOSAVE skips the RDB dump (we use AOF, which is flushed on shutdown anyway).
            sock.sendall(b"SHUTDOWN NOSAVE\r\n")
            sock.recv(64)
    if not wait_gone(server, 10):
        terminate("redis", server, STOP_TIMEOUT)
    state_path("redis.pid").unlink(missing_ok=True)


def clear_stale() -> None:
    """A live pid that does not answer: stop it so start() begins cleanly (no-op when nothing runs)."""
    stop()
