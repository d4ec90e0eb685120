"""The real stack for tests: a fresh Postgres database per run and the API served by granian.

`make test` runs pytest under `python -m storage.local_stack run`, which exports
DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS and CLICKHOUSE_URL.
"""

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from app.access.tokens import generate_key
from storage.postgres import api_keys, workspaces
from storage.postgres.migrate import migrate
from storage.postgres.pool import create_pool
from storage.telemetry import logs

# Fixtures shared by several directories live in modules of their own: https_receiver.
pytest_plugins = ["tests.webhook_receiver"]

# Every worker and dispatcher a test starts (from os.environ) serves its /metrics on a free port:
# concurrent runs share the machine, and one run starts several of each.
os.environ.setdefault("SLUICE_WORKER_METRICS", "127.0.0.1:0")
os.environ.setdefault("SLUICE_DISPATCHER_METRICS", "127.0.0.1:0")

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_ENV = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
SERVER_START_TIMEOUT = 30


def _require_stack() -> None:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        pytest.exit(f"{', '.join(missing)} not set: run the tests with `make test`, which starts the stack", 2)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _execute(dsn: str, sql: str, *args) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(admin_dsn: str, prefix: str = "sluice_test"):
    """A new, migrated database on the stack's Postgres for as long as the block runs; its DSN."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_execute(admin_dsn, f'CREATE DATABASE "{name}"'))
    dsn = _with_database(admin_dsn, name)
    try:
        asyncio.run(migrate(dsn))
        # Redis counters are keyed by workspace id and Redis outlives this database, whose ids
        # would start at 1 again: start them at a random point so no run meets another's.
        asyncio.run(_execute(dsn, "SELECT setval('workspaces_id_seq', $1)", random.randrange(10**10, 10**12)))
        yield dsn
    finally:
        asyncio.run(_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url():
    _require_stack()
    with fresh_database(os.environ["DATABASE_URL"]) as dsn:
        yield dsn


def _wait_until_serving(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API server exited with {process.returncode}; log:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(
        f"API server did not answer within {SERVER_START_TIMEOUT} s; log:\n{log_path.read_text()[-3000:]}"
    )


@pytest.fixture(scope="session")
def ingest_env(tmp_path_factory):
    """What the API and the ingest worker of this run share: topics of their own (Kafka outlives
    the run and may serve another run at once) and a chdb directory of their own."""
    run = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return {
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{run}.",
        "SLUICE_CONSUMER_GROUP": f"sluice-test-{run}",
        "SLUICE_KAFKA_PARTITIONS": "2",
        "CLICKHOUSE_URL": f"chdb://{tmp_path_factory.mktemp('clickhouse')}",
        "SLUICE_SPOOL_DIR": str(tmp_path_factory.mktemp("spool")),
        # Any free port for the worker's ClickHouse HTTP interface: concurrent runs share the machine
        # (readers find the port in the chdb directory).
        "SLUICE_CLICKHOUSE_HTTP": "127.0.0.1:0",
    }


@pytest.fixture(scope="session")
def server_env(database_url, ingest_env):
    return {
        **os.environ,
        **ingest_env,
        "DATABASE_URL": database_url,
        "SLUICE_LAST_USED_FLUSH_SECONDS": "1",
        "SLUICE_MAX_BODY_BYTES": "65536",
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_ENTITLEMENTS_CACHE_SECONDS": "1",
        "SLUICE_PIXEL_CONFIG_CACHE_SECONDS": "1",
        # Every test calls from 127.0.0.1 and concurrent runs share Redis: the failed-auth budget
        # per address is tested on servers of its own (tests/e2e/test_auth_floods.py).
        "SLUICE_AUTH_FAILURES_PER_MINUTE": "1000000",
    }


@contextlib.contextmanager
def running_api(env: dict, log_dir: Path):
    """A real API server (granian, one worker) with the given environment; yields its base URL."""
    with api_server(env, log_dir) as server:
        yield server.url


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen  # granian's main process, leader of a process group of its own
    log: Path


@contextlib.contextmanager
def api_server(env: dict, log_dir: Path) -> Iterator[ApiServer]:
    """A real API server (granian, one worker) leading a process group of its own, so a test may
    SIGKILL the main process and its worker together; stopped (the whole group) on the way out."""
    port = _free_port()
    log_path = log_dir / f"api-{port}.log"
    command = [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--loop", "uvloop"),
        *("--http", "1", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws"),
        # Granian's own lines in Sluice's log format, and one access line per request (sluice.access).
        *("--log-config", str(logs.GRANIAN_LOG_CONFIG), "--no-access-log", "app.main:create_app"),
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log_path)
        yield ApiServer(url, process, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a worker its main left behind


@contextlib.contextmanager
def app_serve(env: dict, log_dir: Path, *args: str) -> Iterator[ApiServer]:
    """`python -m app serve ARGS` as an operator starts it, on a free port of 127.0.0.1 (granian is
    exec'd in its place: the process is granian's main, its workers' parent)."""
    port = _free_port()
    log_path = log_dir / f"api-{port}.log"
    env = {**env, "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": str(port)}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log_path)
        yield ApiServer(url, process, log_path)
    finally:
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited `timeout` seconds later."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def workers_of(pid: int) -> set[int]:
    """The live child processes of `pid` (granian's workers)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if int(parent) == pid and state != "Z":
                    children.add(int(entry.name))
    return children


@pytest.fixture(scope="module")
async def pool(database_url):
    """An asyncpg pool on the test database, for tests that call storage functions directly."""
    pool = await create_pool(database_url, 4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def api(server_env, tmp_path_factory):
    """Base URL of the API server shared by the tests, against the test database."""
    with running_api(server_env, tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="session")
def client(api):
    with httpx.Client(base_url=api + "/api/v1", timeout=10) as c:
        yield c


class Tenants:
    """Makes accounts, workspaces and keys straight in Postgres, as the CLI does."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def run(self, coro_fn):
        async def go():
            pool = await create_pool(self.dsn, 2)
            try:
                return await coro_fn(pool)
            finally:
                await pool.close()

        # A thread of its own, so async tests (whose loop is running) can call it too.
        with ThreadPoolExecutor(1) as executor:
            return executor.submit(asyncio.run, go()).result()

    def workspace(self, name="Test Workspace", tier="enterprise", account_id=None) -> dict:
        async def make(pool):
            account = account_id or (await workspaces.create_account(pool, name))["id"]
            slug = f"ws-{uuid.uuid4().hex[:10]}"
            return await workspaces.create_workspace(pool, account, name, slug, slug, tier, {})

        return self.run(make)

    def key(self, workspace_id: int, scopes=("*",), expires_at=None, tier=None) -> str:
        key, prefix, key_hash = generate_key()

        async def make(pool):
            await api_keys.create_key(pool, workspace_id, "test key", prefix, key_hash, list(scopes), tier, expires_at)

        self.run(make)
        return key

    def fetchval(self, sql: str, *args):
        return self.run(lambda pool: pool.fetchval(sql, *args))

    def execute(self, sql: str, *args):
        return self.run(lambda pool: pool.execute(sql, *args))


@pytest.fixture(scope="session")
def tenants(database_url) -> Tenants:
    return Tenants(database_url)


@pytest.fixture
def tenant(tenants):
    """A fresh workspace with an all-scopes key: (workspace, auth headers)."""
    ws = tenants.workspace()
    return ws, {"Authorization": f"Bearer {tenants.key(ws['id'])}"}


@pytest.fixture(scope="session")
def ingest_worker(ingest_env, tmp_path_factory):
    """`python -m ingest` for this run's topics and chdb directory, consuming until the session ends.
    Yields {"process", "log"}; the log holds the worker's output."""
    log_path = tmp_path_factory.mktemp("ingest") / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest"],
            cwd=ROOT,
            env={**os.environ, **ingest_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "partitions assigned" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"ingest worker did not start consuming; log:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield {"process": process, "log": log_path}
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def clickhouse_query(ingest_worker, ingest_env):
    """sql (and parameters) → list of row tuples, through open_reader: the worker's ClickHouse HTTP interface,
    as `python -m ingest query` does (the worker holds the chdb directory)."""
    from storage.clickhouse.client import open_reader

    def run(sql: str, parameters: dict | None = None) -> list[tuple]:
        reader = open_reader(ingest_env["CLICKHOUSE_URL"])
        try:
            return reader.query(sql, parameters=parameters).result_rows
        finally:
            reader.close()

    return run
