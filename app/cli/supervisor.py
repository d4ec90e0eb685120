"""`python -m app run`: the API server and the workers as child processes of one command.

`make run` uses it so that one Ctrl-C stops everything. A crash is not an outage: a child that
exits is started again after a backoff, while its siblings keep running; only a crash loop stops
the whole, with a message naming the child. Production runs each process on its own
(docker-compose.yml, systemd units), scaled separately, under its own restart policy.
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

# A child that does not stop within this after SIGTERM is killed; the API's graceful shutdown
# flushes the producer within 10 s, so this leaves it room.
STOP_TIMEOUT_SECONDS = 15
# Restart delays: 1 s, doubling up to 30 s; a child that ran this long is stable: back to 1 s.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
# This many exits, each within CRASH_LOOP_GAP_SECONDS of the one before, is a crash loop:
# restarting cannot help (a bad setting, a dependency that is gone), so say so and stop. A
# child that fails less often than that keeps being restarted, at most every 30 s.
CRASH_LOOP_EXITS = 5
CRASH_LOOP_GAP_SECONDS = 60.0
POLL_SECONDS = 0.2
# How long a crashed child's leftover processes (granian's workers when its main process died)
# may take to go after SIGKILL before the child is started again anyway.
LEFTOVER_WAIT_SECONDS = 5.0


@dataclass
class ExitHistory:
    """What the restart policy remembers of one child."""

    started_at: float = 0.0
    unstable_runs: int = 0  # exits in a row, each before the child ran STABLE_SECONDS
    close_exits: int = 0  # exits in a row, each within CRASH_LOOP_GAP_SECONDS of the one before
    exited_at: float | None = None


def spawn(command: list[str]) -> subprocess.Popen:
    # A process group of its own: when the child dies its leftovers can be found and
    # stopped (granian's workers outlive a SIGKILLed main process and keep the port).
    return subprocess.Popen(command, process_group=0)


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen  # the running one, or the last one to exit
    history: ExitHistory
    restarts: int = 0
    restart_at: float | None = None

    @classmethod
    def start(cls, name: str, command: list[str], now: float) -> "Child":
        return cls(name, command, spawn(command), ExitHistory(started_at=now))

    def restart(self, now: float) -> None:
        self.process = spawn(self.command)
        self.history.started_at, self.restart_at = now, None


def restart_delay(history: ExitHistory, now: float) -> float | None:
    """Seconds to wait before starting the child that exited `now` again; None: it is crash looping."""
    close = history.exited_at is not None and now - history.exited_at < CRASH_LOOP_GAP_SECONDS
    history.close_exits = history.close_exits + 1 if close else 1
    history.exited_at = now
    if history.close_exits >= CRASH_LOOP_EXITS:
        return None
    history.unstable_runs = 1 if now - history.started_at >= STABLE_SECONDS else history.unstable_runs + 1
    return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (history.unstable_runs - 1))


def run_children(children: dict[str, list[str]]) -> int:
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    # The children run in process groups of their own, so a terminal's Ctrl-C or hang-up
    # reaches only this process: it stops them itself.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    supervised = [Child.start(name, command, time.monotonic()) for name, command in children.items()]
    looping = None
    while not stopping and looping is None:
        time.sleep(POLL_SECONDS)
        if not stopping:
            looping = _tend(supervised, time.monotonic())
    if looping is not None:
        print(
            f"[run] {looping.name} exited with {looping.process.returncode}: {CRASH_LOOP_EXITS} exits, each within "
            f"{CRASH_LOOP_GAP_SECONDS:g} s of the last, is a crash loop; stopping the others (its log is above)",
            file=sys.stderr,
        )
    else:
        print("[run] stopping (waiting for in-flight events to be flushed)", file=sys.stderr)
    _stop_all(supervised)
    return 0 if looping is None else 1


def _tend(supervised: list[Child], now: float) -> Child | None:
    """Notice exits and schedule restarts, start what is due; the child that crash loops, if any."""
    for child in supervised:
        if child.restart_at is None and child.process.poll() is not None:
            _signal_group(child.process.pid, signal.SIGTERM)  # its leftovers, if any
            delay = restart_delay(child.history, now)
            if delay is None:
                return child
            child.restarts += 1
            child.restart_at = now + delay
            print(
                f"[run] {child.name} exited with {child.process.returncode}; restarting in {delay:g} s "
                f"(restart {child.restarts})",
                file=sys.stderr,
            )
        elif child.restart_at is not None and now >= child.restart_at:
            _clear_group(child.process.pid)
            child.restart(now)
    return None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: they hold no port, and
    orphans are reaped by init, which may take its time."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


def _clear_group(pgid: int) -> None:
    """SIGKILL what is left of a dead child's group and wait (bounded) until it is gone."""
    deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
    _signal_group(pgid, signal.SIGKILL)
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _stop_all(supervised: list[Child]) -> None:
    running = [c for c in supervised if c.restart_at is None and c.process.poll() is None]
    for child in running:
        child.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in running:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[run] {child.name} did not stop within {STOP_TIMEOUT_SECONDS} s; killing it", file=sys.stderr)
            child.process.kill()
            child.process.wait()
    for child in supervised:
        _clear_group(child.process.pid)
