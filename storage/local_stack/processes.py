"""Processes of the stack: pid files, liveness checks, waiting for a start or a stop, helper commands."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from .reporting import StackError, say, shown, tail
from .state import HOST, state_path


def is_root() -> bool:
    return os.geteuid() == 0


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state, 19 = starttime)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def starttime(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def alive(pid: int | None, marker: str | None = None) -> bool:
    """True if pid runs (not a zombie) and, when given, its command line contains marker.

    The marker guards against a stale pid file whose pid now belongs to an unrelated process.
    """
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child (Kafka) that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user (postgres when we are not root)
    fields = _proc_stat(pid)
    if fields is not None and fields[0] == "Z":
        return False
    if marker is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return fields is None  # no procfs at all: trust the pid
    return marker in cmdline


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(name: str, pid: int, grace: float) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, grace):
        say(f"{name}: still running {grace:.0f} s after SIGTERM; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)


def not_up(name: str, port: int, log: Path, why: str) -> StackError:
    """The error for a service that failed to start: why, the end of its log, and what to do."""
    return StackError(
        f"{name} {why}; see {shown(log)} (last lines below)\n{tail(log)}\n"
        f"  next: fix what the log shows and retry; to start {name} from scratch, run `down` and "
        f"delete {shown(state_path(name))} (its data is lost)"
    )


def wait_until(check, name: str, port: int, log: Path, timeout: float, process_alive=None) -> float:
    """Poll check() until true; fail early if the process died, or after timeout seconds."""
    started = time.monotonic()
    while not check():
        if process_alive is not None and not process_alive():
            raise not_up(name, port, log, why=f"exited while starting on {HOST}:{port}")
        if time.monotonic() - started > timeout:
            raise not_up(name, port, log, why=f"did not come up within {timeout} s on {HOST}:{port}")
        time.sleep(0.2)
    return time.monotonic() - started


def run_quiet(cmd: list, what: str, hint: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a helper command, capturing its output; on failure raise with the output and a hint."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise StackError(f"{what} failed (exit {result.returncode}): {output}\n  next: {hint}")
    return result
