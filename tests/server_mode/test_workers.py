"""Exactly once in server mode, where workers reach ClickHouse over HTTP: across a worker killed
between an INSERT and its offset commit (the restarted worker reads the stored offsets from the
server), and with two live workers of one consumer group on one server (only possible in server
mode: an embedded directory opens in one process) through a join and a clean leave."""

import signal
import threading
from pathlib import Path

import httpx

from tests.conftest import running_api
from tests.e2e.test_ingestion import CHROME, event, site
from tests.server_mode.conftest import (
    WAIT,
    Worker,
    event_counts,
    pipeline_env,
    reader_of,
    wait_for_events,
    wait_until,
)

PER_REQUEST = 10


def send(url: str, host: str, requests: int, first: int = 0) -> int:
    """`requests` batches of PER_REQUEST events, each batch from a visitor of its own; events accepted."""
    accepted = 0
    with httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
        for i in range(first, first + requests):
            batch = [event(host, i * PER_REQUEST + j) for j in range(PER_REQUEST)]
            headers = {"User-Agent": CHROME, "X-Forwarded-For": f"10.8.{i // 250}.{i % 250 + 1}"}
            r = c.post("/pixel/track", json=batch, headers=headers)
            assert r.status_code == 200, r.text
            accepted += r.json()["accepted"]
    return accepted


def test_a_worker_killed_between_insert_and_commit_stores_each_event_once(
    server_env, clickhouse_server, tenants, tmp_path
):
    ws, host = site(tenants)
    env = pipeline_env(server_env, clickhouse_server, tmp_path / "spool", "killed", SLUICE_CONSUMER_BATCH_ROWS="50")
    query = reader_of(env["CLICKHOUSE_URL"])
    with running_api({**env, "SLUICE_LOG_LEVEL": "warning"}, tmp_path) as url:
        accepted = send(url, host, requests=30)
    assert accepted == 300

    log = tmp_path / "worker.log"
    doomed = Worker({**env, "SLUICE_FAULT_KILL_AFTER_BATCHES": "2"}, log)
    doomed.start()
    try:
        assert doomed.process is not None and doomed.process.wait(WAIT) == -signal.SIGKILL, doomed.tail()
    finally:
        doomed.stop()
    assert "killing this worker now" in log.read_text()
    rows, distinct, rolled = event_counts(query, ws["id"])
    assert 0 < rows == distinct == rolled < accepted, "two batches are in, their offsets not committed"

    again = Worker(env, log)
    again.start()
    try:
        wait_for_events(query, ws["id"], accepted)
    finally:
        exit_code = again.stop()
    assert exit_code == 0, again.tail()
    assert event_counts(query, ws["id"]) == (accepted, accepted, accepted)
    assert again.rows_inserted() == accepted - rows, "the restarted worker inserted only what was not in"


class Load(threading.Thread):
    """Sends batches until stopped; counts the events accepted."""

    def __init__(self, url: str, host: str):
        super().__init__(daemon=True)
        self.url, self.host = url, host
        self.accepted = 0
        self.error: Exception | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        try:
            while not self.stopping.is_set():
                self.accepted += send(self.url, self.host, requests=1, first=i)
                i += 1
                self.stopping.wait(0.1)  # a steady stream, not a flood
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> int:
        self.stopping.set()
        self.join(60)
        assert self.error is None, self.error
        return self.accepted


def grows_by(query, workspace_id: int, more: int):
    start = event_counts(query, workspace_id)[0]
    return lambda: event_counts(query, workspace_id)[0] >= start + more


def test_two_workers_of_one_group_share_the_partitions_and_store_each_event_once(
    server_env, clickhouse_server, tenants, tmp_path: Path
):
    ws, host = site(tenants)
    env = pipeline_env(server_env, clickhouse_server, tmp_path / "spool", "pair", SLUICE_CONSUMER_BATCH_MS="200")
    query = reader_of(env["CLICKHOUSE_URL"])
    a, b = Worker(env, tmp_path / "a.log"), Worker(env, tmp_path / "b.log")
    with running_api({**env, "SLUICE_LOG_LEVEL": "warning"}, tmp_path) as url:
        load = Load(url, host)
        a.start()
        try:
            a.wait_assigned()
            load.start()
            wait_until("A alone stores events", grows_by(query, ws["id"], 50))
            b.start()
            b.wait_assigned()  # the group rebalanced: B holds some partitions, A the others
            wait_until("A and B store events", grows_by(query, ws["id"], 50))
            assert a.stop() == 0, a.tail()  # a clean leave: A commits its batch, B gets every partition
            b.wait_assigned(times=2)
            wait_until("B alone stores events", grows_by(query, ws["id"], 50))
            accepted = load.stop()
            wait_for_events(query, ws["id"], accepted)
        finally:
            load.stopping.set()
            a.stop()
            b.stop()
    assert b.process is not None and b.process.returncode == 0, b.tail()
    assert event_counts(query, ws["id"]) == (accepted, accepted, accepted)
    inserted = a.rows_inserted(), b.rows_inserted()
    assert min(inserted) > 0 and sum(inserted) == accepted, f"each event inserted once, by A or B: {inserted}"
