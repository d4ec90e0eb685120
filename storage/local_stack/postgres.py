"""Postgres for the stack: find or install the binaries, create the cluster, start, check, stop.

The cluster lives in .services/postgres/, listens on loopback only and trusts every local login;
role and database `sluice` are created on each start if missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path

from .processes import alive, is_root, not_up, read_pid, run_quiet, wait_until
from .reporting import StackError, say, shown
from .state import HOST, known_port, services_dir, state_path
from .state import port as persisted_port

READY_TIMEOUT = 60
STOP_TIMEOUT = 60
APT_PACKAGE = "postgresql"


def _bin_dirs() -> list[Path]:
    """Postgres server bin dirs, newest major version first."""
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")]
    dirs = [d for d in dirs if (d / "initdb").exists() and (d / "pg_ctl").exists()]
    return sorted(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, reverse=True)


def installed() -> bool:
    return bool(_bin_dirs())


def _data() -> Path:
    return state_path("postgres")


def _bin() -> Path:
    """The bin dir matching the data dir's major version (else the newest installed)."""
    dirs = _bin_dirs()
    if not dirs:
        raise StackError(
            "postgres binaries not found under /usr/lib/postgresql/*/bin; run: apt-get install -y postgresql"
        )
    version_file = _data() / "PG_VERSION"
    version = version_file.read_text().strip() if version_file.exists() else None
    if version is None:
        return dirs[0]
    for d in dirs:
        if d.parent.name == version:
            return d
    raise StackError(
        f"{shown(_data())} was created by Postgres {version}, which is not installed; "
        f"install postgresql-{version} or delete that directory (its data is lost)"
    )


def _as_owner(cmd: list) -> list[str]:
    # Postgres refuses to run as root, so as root we run its binaries as the `postgres` OS user.
    cmd = [str(c) for c in cmd]
    return ["runuser", "-u", "postgres", "--", *cmd] if is_root() else cmd


def _os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root but there is no `postgres` OS user; "
            "run: apt-get install -y postgresql (it creates the user)"
        ) from None


def _give_to_postgres(path: Path) -> None:
    if is_root():
        user = _os_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def _ensure_can_reach(path: Path) -> None:
    """As root, make sure the postgres user can traverse every parent of its data dir."""
    if not is_root() or subprocess.run(_as_owner(["test", "-x", path])).returncode == 0:
        return
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            # o+x only: lets others pass through the directory, not list or read it.
            parent.chmod(mode | stat.S_IXOTH)
            say(f"postgres: made {parent} traversable (o+x) so the postgres user can reach its data dir")


def _ready(port: int) -> bool:
    cmd = [_bin() / "pg_isready", "-q", "-h", HOST, "-p", str(port), "-t", "2"]
    return subprocess.run([str(c) for c in cmd]).returncode == 0


def pid() -> int | None:
    return read_pid(_data() / "postmaster.pid")


def running() -> bool:
    port = known_port("postgres")
    if not port:
        return False
    return alive(pid(), "postgres") and _ready(port)


def _initdb() -> None:
    """Create the cluster in a temp dir and rename it, so an interrupted initdb leaves no half-made dir."""
    tmp = state_path("postgres.initdb-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    _give_to_postgres(tmp)
    say("postgres: creating the database cluster (first run only)...")
    run_quiet(
        _as_owner([_bin() / "initdb", "-D", tmp, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"]),
        "initdb",
        f"check disk space and permissions of {shown(services_dir())}",
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
        conf.write(
            "\n# Settings owned by storage/local_stack/postgres.py (rewritten on every start).\n"
            "include_if_exists = 'local_stack.conf'\n"
        )
    os.rename(tmp, _data())


def _write_conf(port: int) -> None:
    data = _data()
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


def _create_role_and_db(port: int) -> None:
    # \gexec runs each generated statement on its own (CREATE DATABASE cannot run in a transaction).
    # Superuser so tests can CREATE DATABASE per run; fine for a loopback-only dev cluster.
    sql = (
        "SELECT 'CREATE ROLE sluice LOGIN SUPERUSER' "
        "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice')\\gexec\n"
        "SELECT 'CREATE DATABASE sluice OWNER sluice' "
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sluice')\\gexec\n"
    )
    cmd = [
        _bin() / "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        HOST,
        "-p",
        port,
        "-U",
        "postgres",
        "-d",
        "postgres",
    ]
    run_quiet(cmd, "creating role/database sluice", "see the psql error above", input=sql)


def start() -> None:
    _ensure_can_reach(services_dir())
    if not (_data() / "PG_VERSION").exists():
        _initdb()
    port = persisted_port("postgres")
    _write_conf(port)
    log = state_path("postgres.log")
    log.touch()
    _give_to_postgres(log)  # pg_ctl opens the log itself, as the postgres user
    say(f"postgres: starting on {HOST}:{port}...")
    started = time.monotonic()
    cmd = [_bin() / "pg_ctl", "-D", _data(), "-l", log, "-w", "-t", READY_TIMEOUT, "-s", "start"]
    result = subprocess.run(_as_owner(cmd), capture_output=True, text=True, cwd=services_dir())
    if result.returncode != 0:
        stop(quiet=True)  # pg_ctl may have left a half-started server behind
        raise not_up(
            "postgres",
            port,
            log,
            why=f"did not come up within {READY_TIMEOUT} s "
            f"on {HOST}:{port} (pg_ctl: {result.stderr.strip() or result.returncode})",
        )
    wait_until(lambda: _ready(port), "postgres", port, log, READY_TIMEOUT)
    _create_role_and_db(port)
    say(f"postgres: ready in {time.monotonic() - started:.1f} s")


def stop(quiet: bool = False) -> None:
    if not installed():
        return  # never installed, so never started
    if not (_data() / "postmaster.pid").exists():
        return
    if not quiet:
        say("postgres: stopping...")
    cmd = [_bin() / "pg_ctl", "-D", _data(), "-m", "fast", "-w", "-t", STOP_TIMEOUT, "-s", "stop"]
    result = subprocess.run(_as_owner(cmd), capture_output=True, text=True, cwd=services_dir())
    if result.returncode != 0 and (_data() / "postmaster.pid").exists() and not quiet:
        say(f"postgres: pg_ctl stop failed: {result.stderr.strip()}")


def clear_stale() -> None:
    """A server that runs but does not answer: stop it so start() begins cleanly."""
    stop(quiet=True)
