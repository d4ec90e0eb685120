"""Local service stack: Postgres, Redis, Kafka (KRaft) and embedded ClickHouse, without Docker.

Command line (from the repository root; progress goes to stderr, prefixed ``[stack]``)::

    python -m storage.local_stack up              # start what is missing, reuse what runs, leave it running
    python -m storage.local_stack run -- CMD ...  # up, run CMD with the env below, stop what `run` started
    python -m storage.local_stack down            # stop every service under .services/
    python -m storage.local_stack status          # one line per service: port, running or not
    python -m storage.local_stack env             # `export NAME=value` lines, e.g. eval "$(... env)"

Environment given to CMD (and printed by ``env``)::

    DATABASE_URL=postgresql://sluice@127.0.0.1:<port>/sluice
    REDIS_URL=redis://127.0.0.1:<port>/0
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>
    CLICKHOUSE_URL=chdb:///<repo>/.services/clickhouse

A variable that is already set is passed through and its service is not provisioned: that is how
to point Sluice at existing services.

``run`` registers its pid in ``.services/users/``. When CMD exits (Ctrl-C and SIGTERM are
forwarded to it and waited for) the services started by ``run`` invocations are stopped, but only
by the last live ``run``; so two concurrent ``make test`` share one stack. Services started by
``up`` are never stopped by ``run``. Start and stop phases hold an exclusive flock on
``.services/lock``, so two invocations never start the same service twice.

State lives in ``<repo>/.services/`` (override with ``SLUICE_SERVICES_DIR``): ``ports.json``
(free loopback ports picked on the first run and reused), ``postgres/`` (data dir), ``redis/``,
``kafka/`` (jars, server.properties, data), ``clickhouse/`` (chdb data), ``*.log``, ``*.pid``.
Missing Postgres / Redis binaries are installed with apt-get; Kafka jars come from Maven Central
through ``storage/kafka/pom.xml``.

Python API, for tests (e.g. failure tests that restart Redis or Kafka)::

    from storage import local_stack
    local_stack.stop_service("kafka")      # "postgres", "redis" or "kafka"; no-op when stopped
    local_stack.start_service("kafka")     # waits until it answers; no-op when running
    local_stack.restart_service("redis")
    local_stack.is_running("redis")        # pid file + live process + answers on its port
    local_stack.service_env()              # the four variables above, as a dict
    local_stack.ensure_up()                # `up`; returns service_env()
    local_stack.down()

Failures raise ``StackError`` whose message says what failed and what to do next.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KAFKA_ASSETS = Path(__file__).resolve().parent / "kafka"

SERVICES = ("postgres", "redis", "kafka")  # start order; stop in reverse
ENV_VARS = {
    "postgres": "DATABASE_URL",
    "redis": "REDIS_URL",
    "kafka": "KAFKA_BOOTSTRAP_SERVERS",
    "clickhouse": "CLICKHOUSE_URL",
}
READY_TIMEOUT = {"postgres": 60, "redis": 20, "kafka": 90}
STOP_TIMEOUT = {"postgres": 60, "redis": 20, "kafka": 30}
LOG_TAIL_LINES = 20
HOST = "127.0.0.1"
USAGE = """usage: python -m storage.local_stack up | down | status | env | run -- CMD [ARGS...]
  up      start what is missing, reuse what runs, leave it running
  run     up, run CMD with DATABASE_URL/REDIS_URL/KAFKA_BOOTSTRAP_SERVERS/CLICKHOUSE_URL set,
          then stop what `run` started (unless another `run` still uses it)
  down    stop every service under .services/
  status  show each service, its port, running or not
  env     print `export NAME=value` lines (eval "$(python -m storage.local_stack env)")"""


class StackError(Exception):
    """A provisioning step failed; the message says what failed and what to do next."""


# ---------------------------------------------------------------------------------------------
# Small helpers: output, paths, processes
# ---------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    # stderr, so `env` output on stdout stays clean for eval "$(...)".
    with contextlib.suppress(OSError):  # a closed terminal/pipe must not abort a start or stop
        print(f"[stack] {message}", file=sys.stderr, flush=True)


def services_dir() -> Path:
    """The state directory; read on every call so tests may set SLUICE_SERVICES_DIR late."""
    override = os.environ.get("SLUICE_SERVICES_DIR")
    return Path(override).resolve() if override else ROOT / ".services"


def _state(*parts: str) -> Path:
    return services_dir().joinpath(*parts)


def _shown(path: Path) -> str:
    """A path as short as possible for messages (relative to the cwd when inside it)."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else rel


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"    (cannot read log: {exc})"
    return "\n".join("    " + line for line in text) or "    (log is empty)"


def _not_up(name: str, port: int, log: Path, why: str = "") -> StackError:
    reason = why or f"did not come up within {READY_TIMEOUT[name]} s on {HOST}:{port}"
    return StackError(
        f"{name} {reason}; see {_shown(log)} (last lines below)\n{_tail(log)}\n"
        f"  next: fix what the log shows and retry; to start {name} from scratch, run `down` and "
        f"delete {_shown(_state(name))} (its data is lost)"
    )


def _is_root() -> bool:
    return os.geteuid() == 0


def _read_pid(path: Path) -> int | None:
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


def _alive(pid: int | None, marker: str | None = None) -> bool:
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


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(name: str, pid: int, grace: float) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, grace):
        _say(f"{name}: still running {grace:.0f} s after SIGTERM; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 10)


def _wait_until(check, name: str, port: int, log: Path, alive=None) -> float:
    """Poll check() until true; fail early if the process died, or after READY_TIMEOUT[name]."""
    started = time.monotonic()
    while not check():
        if alive is not None and not alive():
            raise _not_up(name, port, log, why=f"exited while starting on {HOST}:{port}")
        if time.monotonic() - started > READY_TIMEOUT[name]:
            raise _not_up(name, port, log)
        time.sleep(0.2)
    return time.monotonic() - started


def _run_quiet(cmd: list, what: str, hint: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a helper command, capturing its output; on failure raise with the output and a hint."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise StackError(f"{what} failed (exit {result.returncode}): {output}\n  next: {hint}")
    return result


# ---------------------------------------------------------------------------------------------
# Lock, ports, users
# ---------------------------------------------------------------------------------------------

_lock_fd: int | None = None
_lock_depth = 0


def _ensure_services_dir() -> Path:
    path = services_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
            _say("waiting for another local_stack invocation to finish starting/stopping services...")
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


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _write_json(path: Path, value) -> None:
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


def _port(key: str, *, ours_running: bool = False) -> int:
    """The persisted port for key; a new one if unset or taken by something that is not ours."""
    path = _state("ports.json")
    ports = _read_json(path, {})
    port = ports.get(key)
    if port and (ours_running or _port_free(port)):
        return port
    if port:
        _say(f"{key}: port {port} is taken by another program; picking a new one")
    ports[key] = _pick_port(set(ports.values()))
    _write_json(path, ports)
    return ports[key]


def _known_port(key: str) -> int | None:
    return _read_json(_state("ports.json"), {}).get(key)


def _starttime(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _register_user(pid: int) -> None:
    users = _state("users")
    users.mkdir(exist_ok=True)
    # The start time distinguishes our process from a later one that reuses the pid.
    (users / str(pid)).write_text(_starttime(pid) or "")


def _unregister_user(pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_state("users") / str(pid)).unlink()


def _live_users() -> list[int]:
    """Pids of live `run` invocations; files of dead ones are removed on the way."""
    live = []
    for entry in sorted(_state("users").glob("*")):
        pid = int(entry.name) if entry.name.isdigit() else 0
        recorded = entry.read_text().strip() if pid else ""
        if pid and _alive(pid) and (not recorded or recorded == _starttime(pid)):
            live.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return live


def _run_started() -> set[str]:
    """Services started by some `run` (so the last `run` to leave stops them)."""
    return set(_read_json(_state("run-started.json"), []))


def _set_run_started(names: set[str]) -> None:
    _write_json(_state("run-started.json"), sorted(names))


# ---------------------------------------------------------------------------------------------
# Installing missing binaries
# ---------------------------------------------------------------------------------------------


def _pg_bin_dirs() -> list[Path]:
    """Postgres server bin dirs, newest major version first."""
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")]
    dirs = [d for d in dirs if (d / "initdb").exists() and (d / "pg_ctl").exists()]
    return sorted(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, reverse=True)


def _redis_bin() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)), None
    )


def _apt_install(packages: list[str]) -> None:
    names = " ".join(packages)
    if _is_root():
        prefix = []
    elif shutil.which("sudo"):
        prefix = ["sudo"]
    else:
        raise StackError(f"{names} not installed and we are not root; run: sudo apt-get install -y {names}")
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]  # never stop at a debconf prompt
    _say(f"installing {names} with apt-get (first run only)...")
    started = time.monotonic()
    for args in (["apt-get", "-q", "update"], ["apt-get", "-q", "install", "-y", *packages]):
        # apt's chatter goes to stderr: stdout may be captured by the caller.
        if subprocess.run(prefix + env_prefix + args, stdout=sys.stderr).returncode != 0:
            raise StackError(
                f"`{' '.join(args)}` failed (output above); fix apt (network? dpkg lock held by another "
                f"apt?) and retry, or install by hand: apt-get install -y {names}"
            )
    _say(f"installed {names} in {time.monotonic() - started:.1f} s")


def _install_missing(wanted: list[str]) -> None:
    missing = []
    if "postgres" in wanted and not _pg_bin_dirs():
        missing.append("postgresql")
    if "redis" in wanted and not _redis_bin():
        missing.append("redis-server")
    if missing:
        _apt_install(missing)  # one apt-get update for both packages


# ---------------------------------------------------------------------------------------------
# Postgres
# ---------------------------------------------------------------------------------------------


def _pg_data() -> Path:
    return _state("postgres")


def _pg_bin() -> Path:
    """The bin dir matching the data dir's major version (else the newest installed)."""
    dirs = _pg_bin_dirs()
    if not dirs:
        raise StackError("postgres binaries not found under /usr/lib/postgresql/*/bin; "
                         "run: apt-get install -y postgresql")
    version_file = _pg_data() / "PG_VERSION"
    version = version_file.read_text().strip() if version_file.exists() else None
    if version is None:
        return dirs[0]
    for d in dirs:
        if d.parent.name == version:
            return d
    raise StackError(f"{_shown(_pg_data())} was created by Postgres {version}, which is not installed; "
                     f"install postgresql-{version} or delete that directory (its data is lost)")


def _as_pg_owner(cmd: list) -> list[str]:
    # Postgres refuses to run as root, so as root we run its binaries as the `postgres` OS user.
    cmd = [str(c) for c in cmd]
    return ["runuser", "-u", "postgres", "--", *cmd] if _is_root() else cmd


def _pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("running as root but there is no `postgres` OS user; "
                         "run: apt-get install -y postgresql (it creates the user)") from None


def _give_to_postgres(path: Path) -> None:
    if _is_root():
        user = _pg_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def _ensure_pg_can_reach(path: Path) -> None:
    """As root, make sure the postgres user can traverse every parent of its data dir."""
    if not _is_root() or subprocess.run(_as_pg_owner(["test", "-x", path])).returncode == 0:
        return
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            # o+x only: lets others pass through the directory, not list or read it.
            parent.chmod(mode | stat.S_IXOTH)
            _say(f"postgres: made {parent} traversable (o+x) so the postgres user can reach its data dir")


def _pg_ready(port: int) -> bool:
    cmd = [_pg_bin() / "pg_isready", "-q", "-h", HOST, "-p", str(port), "-t", "2"]
    return subprocess.run([str(c) for c in cmd]).returncode == 0


def _pg_running() -> bool:
    pid = _read_pid(_pg_data() / "postmaster.pid")
    port = _known_port("postgres")
    return bool(port) and _alive(pid, "postgres") and _pg_ready(port)


def _initdb() -> None:
    """Create the cluster in a temp dir and rename it, so an interrupted initdb leaves no half-made dir."""
    tmp = _state("postgres.initdb-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    _give_to_postgres(tmp)
    _say("postgres: creating the database cluster (first run only)...")
    _run_quiet(
        _as_pg_owner([_pg_bin() / "initdb", "-D", tmp, "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8"]),
        "initdb", f"check disk space and permissions of {_shown(services_dir())}",
        cwd=services_dir(),  # the postgres user may not be allowed into our cwd
    )
    # Trust auth, loopback only: this cluster is for local development and tests, never exposed.
    (tmp / "pg_hba.conf").write_text(
        "# local_stack: local development only -- no passwords, loopback only.\n"
        "local all all trust\n"
        "host  all all 127.0.0.1/32 trust\n"
        "host  all all ::1/128 trust\n"
    )
    with (tmp / "postgresql.conf").open("a") as conf:
        conf.write("\n# Settings owned by storage/local_stack.py (rewritten on every start).\n"
                   "include_if_exists = 'local_stack.conf'\n")
    os.rename(tmp, _pg_data())


def _write_pg_conf(port: int) -> None:
    data = _pg_data()
    # A unix socket path longer than ~107 bytes is rejected; then we serve TCP only.
    socket_dir = str(data) if len(f"{data}/.s.PGSQL.{port}.lock") < 100 else ""
    conf = data / "local_stack.conf"
    conf.write_text(
        f"port = {port}\n"
        f"listen_addresses = '{HOST}'\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "# Durability matters even locally: tests exercise crash/restart paths.\n"
        "fsync = on\n"
        "synchronous_commit = on\n"
        "# Two concurrent `make test` runs, each with pools and an API server, share this server.\n"
        "max_connections = 200\n"
    )
    _give_to_postgres(conf)


def _pg_create_role_and_db(port: int) -> None:
    # \gexec runs each generated statement on its own (CREATE DATABASE cannot run in a transaction).
    # Superuser so tests can CREATE DATABASE per run; fine for a loopback-only dev cluster.
    sql = (
        "SELECT 'CREATE ROLE sluice LOGIN SUPERUSER' "
        "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice')\\gexec\n"
        "SELECT 'CREATE DATABASE sluice OWNER sluice' "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sluice')\\gexec\n"
    )
    cmd = [_pg_bin() / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", port,
           "-U", "postgres", "-d", "postgres"]
    _run_quiet(cmd, "creating role/database sluice", "see the psql error above", input=sql)


def _start_postgres() -> None:
    _ensure_pg_can_reach(services_dir())
    if not (_pg_data() / "PG_VERSION").exists():
        _initdb()
    port = _port("postgres")
    _write_pg_conf(port)
    log = _state("postgres.log")
    log.touch()
    _give_to_postgres(log)  # pg_ctl opens the log itself, as the postgres user
    _say(f"postgres: starting on {HOST}:{port}...")
    started = time.monotonic()
    cmd = [_pg_bin() / "pg_ctl", "-D", _pg_data(), "-l", log, "-w", "-t", READY_TIMEOUT["postgres"],
           "-s", "start"]
    result = subprocess.run(_as_pg_owner(cmd), capture_output=True, text=True, cwd=services_dir())
    if result.returncode != 0:
        _stop_postgres(quiet=True)  # pg_ctl may have left a half-started server behind
        raise _not_up("postgres", port, log, why=f"did not come up within {READY_TIMEOUT['postgres']} s "
                      f"on {HOST}:{port} (pg_ctl: {result.stderr.strip() or result.returncode})")
    _wait_until(lambda: _pg_ready(port), "postgres", port, log)
    _pg_create_role_and_db(port)
    _say(f"postgres: ready in {time.monotonic() - started:.1f} s")


def _stop_postgres(quiet: bool = False) -> None:
    if not (_pg_data() / "postmaster.pid").exists():
        return
    if not quiet:
        _say("postgres: stopping...")
    cmd = [_pg_bin() / "pg_ctl", "-D", _pg_data(), "-m", "fast", "-w", "-t", STOP_TIMEOUT["postgres"],
           "-s", "stop"]
    result = subprocess.run(_as_pg_owner(cmd), capture_output=True, text=True, cwd=services_dir())
    if result.returncode != 0 and (_pg_data() / "postmaster.pid").exists() and not quiet:
        _say(f"postgres: pg_ctl stop failed: {result.stderr.strip()}")


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")  # -LOADING while replaying the AOF
    except OSError:
        return False


def _redis_running() -> bool:
    port = _known_port("redis")
    return bool(port) and _alive(_read_pid(_state("redis.pid")), "redis-server") and _redis_answers(port)


def _start_redis() -> None:
    binary = _redis_bin()
    if not binary:
        raise StackError("redis-server not found; run: apt-get install -y redis-server")
    port = _port("redis")
    _state("redis").mkdir(exist_ok=True)
    pidfile, log = _state("redis.pid"), _state("redis.log")
    pidfile.unlink(missing_ok=True)  # stale: _redis_running() said no
    _say(f"redis: starting on {HOST}:{port}...")
    started = time.monotonic()
    # AOF on, RDB snapshots off: every write is logged, no surprise fork+dump pauses in tests.
    cmd = [binary, "--port", str(port), "--bind", HOST, "--dir", str(_state("redis")),
           "--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(log),
           "--appendonly", "yes", "--save", ""]
    if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        raise _not_up("redis", port, log, why=f"refused to start on {HOST}:{port}")
    _wait_until(lambda: _redis_answers(port), "redis", port, log)
    _say(f"redis: ready in {time.monotonic() - started:.1f} s")


def _stop_redis() -> None:
    pid = _read_pid(_state("redis.pid"))
    if not _alive(pid, "redis-server"):
        _state("redis.pid").unlink(missing_ok=True)
        return
    _say("redis: stopping...")
    port = _known_port("redis")
    with contextlib.suppress(OSError):
        with socket.create_connection((HOST, port), timeout=2) as sock:
            # NOSAVE skips the RDB dump (we use AOF, which is flushed on shutdown anyway).
            sock.sendall(b"SHUTDOWN NOSAVE\r\n")
            sock.recv(64)
    if not _wait_gone(pid, 10):
        _terminate("redis", pid, STOP_TIMEOUT["redis"])
    _state("redis.pid").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Kafka (KRaft, single node: broker and controller in one JVM)
# ---------------------------------------------------------------------------------------------


def _kafka_dir() -> Path:
    return _state("kafka")


def _kafka_answers(port: int) -> bool:
    """Send a Kafka ApiVersions v0 request and require a well-formed reply.

    A bare TCP connect is not enough: the socket accepts before the broker serves requests.
    """
    client_id = b"sluice-local-stack"
    request = struct.pack(">hhih", 18, 0, 4242, len(client_id)) + client_id  # api_key, version, corr id
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            reply = b""
            while len(reply) < 10:  # int32 size, int32 correlation id, int16 error code
                chunk = sock.recv(10 - len(reply))
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    _size, correlation_id, error_code = struct.unpack(">iih", reply)
    return correlation_id == 4242 and error_code == 0


def _kafka_running() -> bool:
    port = _known_port("kafka")
    return bool(port) and _alive(_read_pid(_state("kafka.pid")), "kafka.Kafka") and _kafka_answers(port)


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise StackError(f"`{tool}` not found (needed for Kafka); run: apt-get install -y {package}")
    return path


def _fetch_kafka_jars() -> Path:
    """Copy the broker's jars into .services/kafka/libs once per version of pom.xml."""
    libs, pom = _kafka_dir() / "libs", KAFKA_ASSETS / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = libs / ".complete"  # written last: its presence means the copy finished
    if marker.exists() and marker.read_text().strip() == digest:
        return libs
    shutil.rmtree(libs, ignore_errors=True)  # jars of another Kafka version would clash on the classpath
    _say("kafka: fetching jars with mvn (first run, ~60 MB; cached in ~/.m2 afterwards)...")
    started = time.monotonic()
    cmd = [_need("mvn", "maven"), "-q", "-B", "-f", str(pom),
           "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    # Captured: even with -q, Maven 3.8 prints stray colour codes; shown only when it fails.
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # colour codes
        output = "\n".join(output.strip().splitlines()[-40:])
        raise StackError(f"kafka: mvn could not fetch the jars (exit {result.returncode}):\n{output}\n"
                         "  next: check access to Maven Central (proxy settings go in ~/.m2/settings.xml)"
                         " and retry")
    marker.write_text(digest + "\n")
    _say(f"kafka: jars ready in {time.monotonic() - started:.1f} s")
    return libs


def _write_kafka_config(port: int, controller_port: int) -> Path:
    props = _kafka_dir() / "server.properties"
    props.write_text(
        "# Written by storage/local_stack.py on every start; edits are lost.\n"
        "process.roles=broker,controller\n"
        "node.id=1\n"
        f"controller.quorum.voters=1@{HOST}:{controller_port}\n"
        f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}\n"
        f"advertised.listeners=PLAINTEXT://{HOST}:{port}\n"
        "controller.listener.names=CONTROLLER\n"
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
        f"log.dirs={_kafka_dir() / 'data'}\n"
        "# One broker: internal topics cannot be replicated.\n"
        "offsets.topic.replication.factor=1\n"
        "transaction.state.log.replication.factor=1\n"
        "transaction.state.log.min.isr=1\n"
        "# 1 instead of 50 partitions: the first consumer group in a fresh cluster is ready sooner.\n"
        "offsets.topic.num.partitions=1\n"
        "# Consumers in tests should not wait 3 s for a group rebalance.\n"
        "group.initial.rebalance.delay.ms=0\n"
        "num.partitions=4\n"
        "auto.create.topics.enable=true\n"
    )
    return props


def _kafka_cluster_id() -> str:
    # Same shape as `kafka-storage random-uuid`: 16 random bytes, url-safe base64, no padding
    # (saves a JVM start). Kafka avoids ids starting with "-" (they look like CLI flags).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_kafka_storage(libs: Path, props: Path) -> None:
    data = _kafka_dir() / "data"
    if (data / "meta.properties").exists():
        return
    shutil.rmtree(data, ignore_errors=True)  # an interrupted format leaves a dir without meta.properties
    _say("kafka: formatting KRaft storage (first run only)...")
    _run_quiet(
        [_need("java", "openjdk-17-jre-headless"), "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
         "-t", _kafka_cluster_id(), "-c", props],
        "kafka storage format", f"delete {_shown(data)} and retry",
    )


def _start_kafka() -> None:
    _kafka_dir().mkdir(exist_ok=True)
    libs = _fetch_kafka_jars()
    port = _port("kafka")
    controller_port = _port("kafka_controller")
    props = _write_kafka_config(port, controller_port)
    _format_kafka_storage(libs, props)
    log, pidfile = _state("kafka.log"), _state("kafka.pid")
    _say(f"kafka: starting on {HOST}:{port}...")
    started = time.monotonic()
    cmd = [_need("java", "openjdk-17-jre-headless"), "-Xms256m", "-Xmx768m", "-cp", f"{libs}/*",
           f"-Dlog4j.configuration=file:{KAFKA_ASSETS / 'log4j.properties'}", "kafka.Kafka", str(props)]
    with log.open("w") as out:
        # Own session: Ctrl-C in the terminal must not reach the broker, `run` decides when it stops.
        proc = subprocess.Popen(cmd, cwd=_kafka_dir(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    try:
        _wait_until(lambda: _kafka_answers(port), "kafka", port, log, alive=lambda: proc.poll() is None)
    except StackError:
        _stop_kafka(quiet=True)  # do not leave a half-started broker holding the ports
        raise
    _say(f"kafka: ready in {time.monotonic() - started:.1f} s")


def _stop_kafka(quiet: bool = False) -> None:
    pidfile = _state("kafka.pid")
    pid = _read_pid(pidfile)
    if _alive(pid, "kafka.Kafka"):
        if not quiet:
            _say("kafka: stopping (controlled shutdown, up to 30 s)...")
        _terminate("kafka", pid, STOP_TIMEOUT["kafka"])
    pidfile.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

_PID_FILES = {"postgres": ("postgres", "postmaster.pid"), "redis": ("redis.pid",), "kafka": ("kafka.pid",)}
_RUNNING = {"postgres": _pg_running, "redis": _redis_running, "kafka": _kafka_running}
_START = {"postgres": _start_postgres, "redis": _start_redis, "kafka": _start_kafka}
_STOP = {"postgres": _stop_postgres, "redis": _stop_redis, "kafka": _stop_kafka}


def _pid_of(name: str) -> int | None:
    return _read_pid(_state(*_PID_FILES[name]))


def _check_name(name: str) -> None:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")


def is_running(name: str) -> bool:
    """True if our service runs: pid file, live process, and it answers on its port."""
    _check_name(name)
    return _RUNNING[name]()


def start_service(name: str) -> bool:
    """Start one service unless it already runs; waits until it answers. True if it was started."""
    _check_name(name)
    with stack_lock():
        if _RUNNING[name]():
            return False
        if name == "postgres" and _pg_bin_dirs() and (_pg_data() / "postmaster.pid").exists():
            _stop_postgres(quiet=True)  # a server that runs but does not answer: restart it cleanly
        if name in ("redis", "kafka"):
            _STOP[name]()  # same for a live pid that does not answer; no-op when nothing runs
        _install_missing([name])
        _START[name]()
        return True


def stop_service(name: str) -> None:
    """Stop one service (no-op when it is not running)."""
    _check_name(name)
    with stack_lock():
        if name == "postgres" and not _pg_bin_dirs():
            return  # never installed, so never started
        _STOP[name]()


def restart_service(name: str) -> None:
    with stack_lock():
        stop_service(name)
        start_service(name)


def _wanted() -> list[str]:
    """Services to provision: those whose variable is not already set by the caller."""
    return [name for name in SERVICES if not os.environ.get(ENV_VARS[name])]


def service_env() -> dict[str, str]:
    """The four connection variables: the caller's own values, else our services' addresses."""
    env = {}
    for name, var in ENV_VARS.items():
        if os.environ.get(var):
            env[var] = os.environ[var]
        elif name == "clickhouse":
            env[var] = f"chdb://{_state('clickhouse')}"
        else:
            port = _known_port(name) or _port(name)  # allocate (and persist) if never chosen
            env[var] = {
                "postgres": f"postgresql://sluice@{HOST}:{port}/sluice",
                "redis": f"redis://{HOST}:{port}/0",
                "kafka": f"{HOST}:{port}",
            }[name]
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
                _say(f"{name}: {ENV_VARS[name]} is set; using it, not starting a local {name}")
        _install_missing(wanted)
        for name in wanted:
            if _RUNNING[name]():
                _say(f"{name}: already running on {HOST}:{_known_port(name)}")
                continue
            if for_run:
                _set_run_started(_run_started() | {name})
            start_service(name)
        if not os.environ.get(ENV_VARS["clickhouse"]):
            _state("clickhouse").mkdir(exist_ok=True)  # chdb is embedded: a directory is all it needs
        if not for_run:
            _set_run_started(_run_started() - set(wanted))
        return service_env()


def down() -> None:
    """Stop every service under .services/, whoever started it."""
    with stack_lock():
        users = _live_users()
        if users:
            _say(f"note: `run` invocations still active (pids {', '.join(map(str, users))}); stopping anyway")
        for name in reversed(SERVICES):
            stop_service(name)
        _set_run_started(set())


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _print_where(env: dict[str, str]) -> None:
    for var, value in env.items():
        _say(f"  {var}={value}")


def cmd_up() -> int:
    started = time.monotonic()
    env = ensure_up()
    elapsed = time.monotonic() - started
    _say(f"stack is up ({elapsed:.1f} s); stop it with `python -m storage.local_stack down`")
    _print_where(env)
    return 0


def cmd_down() -> int:
    down()
    _say("stack is down")
    return 0


def cmd_status() -> int:
    for name in SERVICES:
        var = ENV_VARS[name]
        if os.environ.get(var):
            print(f"{name:<11} {'external':<16} {var}={os.environ[var]}")
            continue
        port = _known_port(name)
        state = f"running (pid {_pid_of(name)})" if port and _RUNNING[name]() else "stopped"
        where = f"{HOST}:{port}" if port else "(no port yet)"
        print(f"{name:<11} {where:<16} {state}")
    clickhouse = os.environ.get("CLICKHOUSE_URL") or f"chdb://{_state('clickhouse')}"
    print(f"{'clickhouse':<11} {'embedded':<16} {clickhouse}")
    return 0


def cmd_env() -> int:
    ports = _read_json(_state("ports.json"), {})
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
            child = subprocess.Popen(argv, env=env, preexec_fn=lambda: signal.pthread_sigmask(
                signal.SIG_SETMASK, old_mask))
        except OSError as exc:
            _say(f"cannot run {argv[0]!r}: {exc}")
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
        _unregister_user(os.getpid())
        others = _live_users()
        to_stop = _run_started()
        if others:
            if to_stop:
                _say(f"leaving services running: still used by run pid(s) {', '.join(map(str, others))}")
            return
        for name in reversed(SERVICES):
            if name in to_stop:
                stop_service(name)
        _set_run_started(set())
        if to_stop:
            _say(f"stopped {', '.join(n for n in SERVICES if n in to_stop)}")


def cmd_run(argv: list[str]) -> int:
    if not argv:
        _say("usage: python -m storage.local_stack run -- CMD [ARGS...]")
        return 2

    def terminated(signum, _frame):
        raise SystemExit(128 + signum)  # SIGTERM while starting: still unregister and clean up

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)
    with stack_lock():
        _register_user(os.getpid())
    try:
        env = {**os.environ, **ensure_up(for_run=True)}
        _say(f"running: {shlex.join(argv)}")
        code = _run_child(argv, env)
    finally:
        # No more interruptions: a half-done stop would leave orphan services behind.
        for sig in _FORWARDED:
            signal.signal(sig, lambda *_: _say("stopping services, please wait..."))
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
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
