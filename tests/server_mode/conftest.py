"""Server mode: the stack with CLICKHOUSE_URL=http://… (what docker-compose runs), on a ClickHouse
server of this run's own (tests/clickhouse_server.py: the real engine, writable, over HTTP), with
credentials and a database in the URL as docker-compose has them.

Each pipeline here (API, ingest workers) has Kafka topics, a consumer group and a ClickHouse
database of its own, so none takes the stack worker's records nor another pipeline's offsets.
"""

import contextlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import clickhouse_connect
import httpx
import pytest

from storage.clickhouse.client import open_reader
from tests.conftest import ROOT, running_api

USER, PASSWORD = "tester", "s3cret pass"
START_TIMEOUT = 60
WAIT = 90  # the pipeline on two loaded cores: events in ClickHouse within this long


@dataclass(frozen=True)
class ClickHouseServer:
    port: int

    def url(self, database: str) -> str:
        return f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str) -> str:
        """A new database on the server; the CLICKHOUSE_URL that names it."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=self.port, username=USER, password=PASSWORD, database="default"
        )
        try:
            client.command(f"CREATE DATABASE {name}")
        finally:
            client.close()
        return self.url(name)


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory) -> Iterator[ClickHouseServer]:
    directory = tmp_path_factory.mktemp("clickhouse-server")
    out, log = directory / "port", directory / "server.log"
    with open(out, "w") as stdout, open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "tests/clickhouse_server.py", str(directory / "data"), "--port", "0"]
            + ["--user", f"{USER}:{PASSWORD}"],
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not out.read_text().endswith("\n"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the ClickHouse server did not start; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield ClickHouseServer(int(out.read_text()))
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def pipeline_env(server_env: dict, server: ClickHouseServer, spool: Path, name: str, **extra: str) -> dict:
    """Topics, a consumer group and a database of this pipeline's own, on the server."""
    run = f"{name}-{uuid.uuid4().hex[:8]}"
    return {
        **server_env,
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{run}.",
        "SLUICE_CONSUMER_GROUP": f"sluice-test-{run}",
        "SLUICE_KAFKA_PARTITIONS": "2",
        "CLICKHOUSE_URL": server.create_database(name.replace("-", "_")),
        "SLUICE_SPOOL_DIR": str(spool),
        "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
        "SLUICE_LOG_LEVEL": "info",
        **extra,
    }


class Worker:
    """A `python -m ingest` of a test's own, logging to `log`."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest"], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_assigned(self, times: int = 1) -> None:
        """Until the worker logged its `times`-th assignment that holds partitions."""
        deadline = time.monotonic() + START_TIMEOUT
        while len(assignments(self.log.read_text())) < times:
            assert self.process is not None and self.process.poll() is None, self.tail()
            assert time.monotonic() < deadline, f"no partitions assigned {times} time(s):\n{self.tail()}"
            time.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM, as a deployment stops it: it inserts and commits what it took, then exits."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def rows_inserted(self) -> int:
        """Rows this worker's INSERTs put in their tables, as it logged them when it stopped."""
        found = re.findall(r"stopped: \{'rows': (\d+)", self.log.read_text())
        assert found, f"the worker did not log its totals:\n{self.tail()}"
        return int(found[-1])

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def assignments(log: str) -> list[str]:
    return [line for line in re.findall(r"partitions assigned: (\d+)", log) if line != "0"]


@contextlib.contextmanager
def running_worker(env: dict, log: Path) -> Iterator[Worker]:
    w = Worker(env, log)
    w.start()
    try:
        w.wait_assigned()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
def pipeline(server_env, clickhouse_server, tmp_path_factory) -> dict:
    """The environment of this directory's shared API and worker."""
    return pipeline_env(server_env, clickhouse_server, tmp_path_factory.mktemp("spool"), "shared")


@pytest.fixture(scope="session")
def server_worker(pipeline, tmp_path_factory) -> Iterator[Worker]:
    with running_worker(pipeline, tmp_path_factory.mktemp("worker") / "worker.log") as w:
        yield w


@pytest.fixture(scope="session")
def server_api(pipeline, server_worker, tmp_path_factory) -> Iterator[httpx.Client]:
    env = {**pipeline, "SLUICE_LOG_LEVEL": "warning"}
    with running_api(env, tmp_path_factory.mktemp("api")) as url:
        with httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
            yield c


Query = Callable[..., list[tuple]]


def reader_of(url: str) -> Query:
    """sql (and parameters) → rows, read from the server as every Sluice reader does (open_reader)."""

    def run(sql: str, parameters: dict | None = None) -> list[tuple]:
        reader = open_reader(url)
        try:
            return [tuple(row) for row in reader.query(sql, parameters=parameters).result_rows]
        finally:
            reader.close()

    return run


@pytest.fixture(scope="session")
def server_query(pipeline) -> Query:
    return reader_of(pipeline["CLICKHOUSE_URL"])


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.3)


def event_counts(query: Query, workspace_id: int) -> tuple[int, int, int]:
    """(rows, distinct event ids, events the hourly rollup counted): a row stored twice shows in the
    first (until a merge collapses it) and in the third (forever)."""
    p = {"ws": workspace_id}
    rows, distinct = query("SELECT count(), uniqExact(event_id) FROM events WHERE workspace_id = {ws:UInt64}", p)[0]
    rolled = query("SELECT sum(events) FROM pageviews_hourly WHERE workspace_id = {ws:UInt64}", p)[0][0]
    return int(rows), int(distinct), int(rolled or 0)


def wait_for_events(query: Query, workspace_id: int, expected: int) -> None:
    what = f"{expected} events of workspace {workspace_id}"
    wait_until(what, lambda: event_counts(query, workspace_id)[0] >= expected)
