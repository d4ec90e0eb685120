"""The state directory .services/: where it is, its lock, its JSON files and the persisted ports."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
from pathlib import Path

from .reporting import say

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def services_dir() -> Path:
    """The state directory; read on every call so tests may set SLUICE_SERVICES_DIR late."""
    override = os.environ.get("SLUICE_SERVICES_DIR")
    return Path(override).resolve() if override else ROOT / ".services"


def state_path(*parts: str) -> Path:
    return services_dir().joinpath(*parts)


def _ensure_services_dir() -> Path:
    path = services_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


_lock_fd: int | None = None
_lock_depth = 0


@contextlib.contextmanager
def stack_lock():
    """Exclusive flock on .services/lock; re-entrant within a process (flock is per open file)."""
    global _lock_fd, _lock_depth
    if _lock_depth == 0:
        # os.open fds are not inherited (PEP 446), so daemons we spawn never hold the lock.
        fd = os.open(_ensure_services_dir() / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another local_stack invocation to finish starting/stopping services...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        _lock_fd = fd
    _lock_depth += 1
    try:
        yield
    finally:
        _lock_depth -= 1
        if _lock_depth == 0:
            os.close(_lock_fd)
            _lock_fd = None


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def write_json(path: Path, value) -> None:
    # Write-then-rename so a crash never leaves a half-written file behind.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR like the servers themselves: TIME_WAIT leftovers must not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_port(avoid: set[int]) -> int:
    # Stay below the kernel's ephemeral range (32768+ on Linux) so outgoing connections made
    # between runs cannot squat on our persisted ports.
    for _ in range(200):
        port = random.randint(20000, 32000)
        if port not in avoid and _port_free(port):
            return port
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port(key: str, *, ours_running: bool = False) -> int:
    """The persisted port for key; a new one if unset or taken by something that is not ours."""
    path = state_path("ports.json")
    ports = read_json(path, {})
    chosen = ports.get(key)
    if chosen and (ours_running or _port_free(chosen)):
        return chosen
    if chosen:
        say(f"{key}: port {chosen} is taken by another program; picking a new one")
    ports[key] = _pick_port(set(ports.values()))
    write_json(path, ports)
    return ports[key]


def known_port(key: str) -> int | None:
    return read_json(state_path("ports.json"), {}).get(key)
