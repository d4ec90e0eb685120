"""`python -m app run`: the API server and the workers as child processes of one command.

`make run` uses it so that one Ctrl-C stops everything, and so a child that dies takes the
others down with a message naming it instead of leaving a half-running system. Production
runs each process on its own (docker-compose.yml, systemd units), scaled separately.
"""

import signal
import subprocess
import sys
import time

# A child that does not stop within this after SIGTERM is killed; the API's graceful shutdown
# flushes the producer within 10 s, so this leaves it room.
STOP_TIMEOUT_SECONDS = 15


def run_children(children: dict[str, list[str]]) -> int:
    processes = {name: subprocess.Popen(command) for name, command in children.items()}
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    failed = None
    while not stopping and failed is None:
        time.sleep(0.2)
        failed = next((name for name, p in processes.items() if p.poll() is not None), None)
    if failed is not None:
        print(f"[run] {failed} exited with {processes[failed].returncode}; stopping the others "
              f"(its log is above)", file=sys.stderr)
    else:
        print("[run] stopping (waiting for in-flight events to be flushed)", file=sys.stderr)
    _stop_all(processes)
    return 0 if failed is None else 1


def _stop_all(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name, process in processes.items():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[run] {name} did not stop within {STOP_TIMEOUT_SECONDS} s; killing it", file=sys.stderr)
            process.kill()
