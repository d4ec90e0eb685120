"""Registry of live `run` invocations and of the services they started.

The last live `run` to leave stops what any `run` started, so concurrent runs share one stack.
"""

from __future__ import annotations

import contextlib

from .processes import alive, starttime
from .state import read_json, state_path, write_json


def register_user(pid: int) -> None:
    users = state_path("users")
    users.mkdir(exist_ok=True)
    # The start time distinguishes our process from a later one that reuses the pid.
    (users / str(pid)).write_text(starttime(pid) or "")


def unregister_user(pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_path("users") / str(pid)).unlink()


def live_users() -> list[int]:
    """Pids of live `run` invocations; files of dead ones are removed on the way."""
    live = []
    for entry in sorted(state_path("users").glob("*")):
        pid = int(entry.name) if entry.name.isdigit() else 0
        recorded = entry.read_text().strip() if pid else ""
        if pid and alive(pid) and (not recorded or recorded == starttime(pid)):
            live.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return live


def run_started() -> set[str]:
    """Services started by some `run` (so the last `run` to leave stops them)."""
    return set(read_json(state_path("run-started.json"), []))


def set_run_started(names: set[str]) -> None:
    write_json(state_path("run-started.json"), sorted(names))
