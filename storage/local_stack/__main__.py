"""Command line of the local stack: `python -m storage.local_stack up|run|down|status|env`.

See the package docstring (storage/local_stack/__init__.py) for what each command does.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time

from .reporting import StackError, say
from .runs import live_users, register_user, run_started, set_run_started, unregister_user
from .stack import ENV_VARS, SERVICES, down, ensure_up, is_running, pid_of, service_env, stop_service
from .state import HOST, known_port, read_json, stack_lock, state_path

USAGE = """usage: python -m storage.local_stack up | down | status | env | run -- CMD [ARGS...]
  up      start what is missing, reuse what runs, leave it running
  run     up, run CMD with DATABASE_URL/REDIS_URL/KAFKA_BOOTSTRAP_SERVERS/CLICKHOUSE_URL set,
          then stop what `run` started (unless another `run` still uses it)
  down    stop every service under .services/
  status  show each service, its port, running or not
  env     print `export NAME=value` lines (eval "$(python -m storage.local_stack env)")"""


def _print_where(env: dict[str, str]) -> None:
    for var, value in env.items():
        say(f"  {var}={value}")


def cmd_up() -> int:
    started = time.monotonic()
    env = ensure_up()
    elapsed = time.monotonic() - started
    say(f"stack is up ({elapsed:.1f} s); stop it with `python -m storage.local_stack down`")
    _print_where(env)
    return 0


def cmd_down() -> int:
    down()
    say("stack is down")
    return 0


def cmd_status() -> int:
    for name in SERVICES:
        var = ENV_VARS[name]
        if os.environ.get(var):
            print(f"{name:<11} {'external':<16} {var}={os.environ[var]}")
            continue
        port = known_port(name)
        state = f"running (pid {pid_of(name)})" if port and is_running(name) else "stopped"
        where = f"{HOST}:{port}" if port else "(no port yet)"
        print(f"{name:<11} {where:<16} {state}")
    clickhouse = os.environ.get("CLICKHOUSE_URL") or f"chdb://{state_path('clickhouse')}"
    print(f"{'clickhouse':<11} {'embedded':<16} {clickhouse}")
    return 0


def cmd_env() -> int:
    ports = read_json(state_path("ports.json"), {})
    if all(name in ports for name in SERVICES):
        env = service_env()  # no lock: must not wait for a `run` that is busy starting Kafka
    else:
        with stack_lock():  # a fresh checkout: ports get picked and persisted now
            env = service_env()
    for var, value in env.items():
        print(f"export {var}={shlex.quote(value)}")
    return 0


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SI_KERNEL = 0x80  # si_code of signals the kernel sends itself, e.g. the terminal's Ctrl-C


def _run_child(argv: list[str], env: dict[str, str]) -> int:
    """Run CMD, forwarding SIGINT/SIGTERM/SIGHUP to it; return its exit code (128+N if killed by N).

    We block those signals and collect them with sigtimedwait because that tells us who sent
    them: Ctrl-C at the terminal reaches the whole foreground process group (CMD included), and
    forwarding it again would make e.g. pytest see a second Ctrl-C and abort its own cleanup.
    Only signals sent to us alone (kill PID, CI timeouts) are forwarded.
    """
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    try:
        try:
            # CMD must start with the normal mask, not our blocked one.
            child = subprocess.Popen(
                argv, env=env, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            )
        except OSError as exc:
            say(f"cannot run {argv[0]!r}: {exc}")
            return 127
        while child.poll() is None:
            info = signal.sigtimedwait(_FORWARDED, 0.2)
            if info is not None and info.si_code != _SI_KERNEL:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(info.si_signo)
        while signal.sigtimedwait(_FORWARDED, 0):
            pass  # late arrivals: CMD is gone, so nothing to forward them to
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return 128 - child.returncode if child.returncode < 0 else child.returncode


def _release() -> None:
    """Unregister; if we were the last live `run`, stop every service some `run` started."""
    with stack_lock():
        unregister_user(os.getpid())
        others = live_users()
        to_stop = run_started()
        if others:
            if to_stop:
                say(f"leaving services running: still used by run pid(s) {', '.join(map(str, others))}")
            return
        for name in reversed(SERVICES):
            if name in to_stop:
                stop_service(name)
        set_run_started(set())
        if to_stop:
            say(f"stopped {', '.join(n for n in SERVICES if n in to_stop)}")


def cmd_run(argv: list[str]) -> int:
    if not argv:
        say("usage: python -m storage.local_stack run -- CMD [ARGS...]")
        return 2

    def terminated(signum, _frame):
        raise SystemExit(128 + signum)  # SIGTERM while starting: still unregister and clean up

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)
    with stack_lock():
        register_user(os.getpid())
    try:
        env = {**os.environ, **ensure_up(for_run=True)}
        say(f"running: {shlex.join(argv)}")
        code = _run_child(argv, env)
    finally:
        # No more interruptions: a half-done stop would leave orphan services behind.
        for sig in _FORWARDED:
            signal.signal(sig, lambda *_: say("stopping services, please wait..."))
        _release()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    simple = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}
    try:
        if command in simple and not rest:
            return simple[command]()
        if command == "run":
            return cmd_run(rest[1:] if rest[:1] == ["--"] else rest)
    except StackError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
