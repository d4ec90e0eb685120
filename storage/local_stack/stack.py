"""The stack as a whole: start, stop and check services by name, `up`, `down`, and their addresses.

Each service module (postgres, redis, kafka) offers the same functions: running(), pid(),
start(), stop(), clear_stale(), installed() when APT_PACKAGE is set; this module dispatches
over them under the stack lock.
"""

from __future__ import annotations

import os

from . import kafka, postgres, redis
from .apt import apt_install
from .reporting import say
from .runs import live_users, run_started, set_run_started
from .state import HOST, known_port, stack_lock, state_path
from .state import port as persisted_port

SERVICES = ("postgres", "redis", "kafka")  # start order; stop in reverse
ENV_VARS = {
    "postgres": "DATABASE_URL",
    "redis": "REDIS_URL",
    "kafka": "KAFKA_BOOTSTRAP_SERVERS",
    "clickhouse": "CLICKHOUSE_URL",
}
_MODULES = {"postgres": postgres, "redis": redis, "kafka": kafka}


def _service(name: str):
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    return _MODULES[name]


def _install_missing(wanted: list[str]) -> None:
    missing = [
        _MODULES[name].APT_PACKAGE
        for name in SERVICES
        if name in wanted and _MODULES[name].APT_PACKAGE and not _MODULES[name].installed()
    ]
    if missing:
        apt_install(missing)  # one apt-get update for both packages


def pid_of(name: str) -> int | None:
    return _service(name).pid()


def is_running(name: str) -> bool:
    """True if our service runs: pid file, live process, and it answers on its port."""
    return _service(name).running()


def start_service(name: str) -> bool:
    """Start one service unless it already runs; waits until it answers. True if it was started."""
    service = _service(name)
    with stack_lock():
        if service.running():
            return False
        service.clear_stale()
        _install_missing([name])
        service.start()
        return True


def stop_service(name: str) -> None:
    """Stop one service (no-op when it is not running)."""
    service = _service(name)
    with stack_lock():
        service.stop()


def restart_service(name: str) -> None:
    with stack_lock():
        stop_service(name)
        start_service(name)


def _wanted() -> list[str]:
    """Services to provision: those whose variable is not already set by the caller."""
    return [name for name in SERVICES if not os.environ.get(ENV_VARS[name])]


def _address(name: str, port: int) -> str:
    return {
        "postgres": f"postgresql://sluice@{HOST}:{port}/sluice",
        "redis": f"redis://{HOST}:{port}/0",
        "kafka": f"{HOST}:{port}",
    }[name]


def service_env() -> dict[str, str]:
    """The four connection variables: the caller's own values, else our services' addresses."""
    env = {}
    for name, var in ENV_VARS.items():
        if os.environ.get(var):
            env[var] = os.environ[var]
        elif name == "clickhouse":
            env[var] = f"chdb://{state_path('clickhouse')}"
        else:
            # Allocate (and persist) a port if none was ever chosen.
            env[var] = _address(name, known_port(name) or persisted_port(name))
    return env


def ensure_up(*, for_run: bool = False) -> dict[str, str]:
    """`up`: start what is missing, reuse what runs; returns service_env().

    For `run`, every service it starts is recorded in run-started.json (before starting, so a
    half-started one is cleaned up too); plain `up` claims the services, so no `run` stops them.
    """
    with stack_lock():
        wanted = _wanted()
        for name in SERVICES:
            if name not in wanted:
                say(f"{name}: {ENV_VARS[name]} is set; using it, not starting a local {name}")
        _install_missing(wanted)
        for name in wanted:
            if _MODULES[name].running():
                say(f"{name}: already running on {HOST}:{known_port(name)}")
                continue
            if for_run:
                set_run_started(run_started() | {name})
            start_service(name)
        if not os.environ.get(ENV_VARS["clickhouse"]):
            state_path("clickhouse").mkdir(exist_ok=True)  # chdb is embedded: a directory is all it needs
        if not for_run:
            set_run_started(run_started() - set(wanted))
        return service_env()


def down() -> None:
    """Stop every service under .services/, whoever started it."""
    with stack_lock():
        users = live_users()
        if users:
            say(f"note: `run` invocations still active (pids {', '.join(map(str, users))}); stopping anyway")
        for name in reversed(SERVICES):
            stop_service(name)
        set_run_started(set())
