"""Tracked events over HTTP end in ClickHouse exactly once, across a killed consumer and a Kafka restart.

The whole path is real: granian serving the app, Redis, Kafka, `python -m ingest` and an
embedded ClickHouse directory read through the worker's query socket.
"""

import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from ingest.events import Topics
from storage.clickhouse.client import worker_reader
from storage.local_stack.kafka import DedicatedBroker
from storage.postgres import domains
from tests.conftest import ROOT, running_api
from tests.integration.ingest.test_consumer import settle

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
DRAIN_TIMEOUT = 90


def site(tenants) -> tuple[dict, str]:
    """A workspace with a registered site host."""
    ws = tenants.workspace()
    host = f"site-{uuid.uuid4().hex[:8]}.example"
    tenants.run(lambda pool: domains.create_domain(pool, ws["id"], host, {}))
    return ws, host


def event(host: str, n: int, name: str = "pageview", **extra) -> dict:
    return {
        "event": name,
        "url": f"https://{host}/page/{n}?utm_source=news&utm_campaign=launch",
        "referrer": "https://www.google.com/search?q=x",
        "properties": {"n": n},
        **extra,
    }


def rows_of(query, workspace_id: int):
    return query("SELECT * FROM events WHERE workspace_id = {ws:UInt64} ORDER BY time", {"ws": workspace_id})


def wait_for_count(count: "Counter", expected: int, timeout: float = DRAIN_TIMEOUT) -> tuple[int, int]:
    """Poll until `count()` reaches `expected`; then, once sentinels sent behind every record are
    stored (no duplicate can still be on its way), the count. What it saw last if it never did."""
    deadline = time.monotonic() + timeout
    seen = (0, 0)
    while time.monotonic() < deadline:
        seen = count()
        if seen[0] >= expected:
            count.settle(deadline - time.monotonic())
            return count()
        time.sleep(0.3)
    return seen


# --- the shared server and worker -------------------------------------------------------


def test_every_form_of_tracking_lands_once_with_enriched_fields(client, tenants, clickhouse_query, server_env):
    ws, host = site(tenants)
    ua = {"User-Agent": CHROME}
    for n in range(3):
        r = client.post("/pixel/track", json=event(host, n), headers=ua)
        assert r.status_code == 200 and r.json() == {"tracked": True}, r.text
    for n in range(3, 5):  # navigator.sendBeacon sends text/plain
        r = client.post(
            "/pixel/track",
            content=orjson.dumps(event(host, n)),
            headers={**ua, "Content-Type": "text/plain;charset=UTF-8"},
        )
        assert r.status_code in (200, 202, 204), r.text
    r = client.get("/pixel/track", params={"event": "pageview", "url": f"https://{host}/noscript"}, headers=ua)
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content[:6] == b"GIF89a"
    batch = [event(host, n) for n in range(10, 14)] + [{"event": "bad name!", "url": f"https://{host}/x"}]
    r = client.post("/pixel/track", json=batch, headers=ua)
    assert r.status_code == 207, r.text

    rows, distinct = wait_for_count(counter(server_env, ws["id"]), 10)
    assert (rows, distinct) == (10, 10)
    columns = [
        c
        for (c,) in clickhouse_query(
            "SELECT name FROM system.columns WHERE table = 'events' AND database = currentDatabase() ORDER BY position"
        )
    ]
    stored = [dict(zip(columns, row, strict=True)) for row in rows_of(clickhouse_query, ws["id"])]
    first = next(r for r in stored if r["path"] == "/page/0")
    assert first["host"] == host and first["event"] == "pageview"
    assert first["utm_source"] == "news" and first["utm_campaign"] == "launch"
    assert first["referrer_host"] == "www.google.com"
    assert first["browser"] == "Chrome" and first["os"] == "Windows" and first["device"] == "desktop"
    assert first["is_bot"] is False or first["is_bot"] == 0
    assert orjson.loads(first["properties"]) == {"n": 0}
    assert str(first["event_id"])[14] == "7", "a UUIDv7: time-ordered"
    assert {r["source"] for r in stored} >= {"json", "beacon", "gif", "batch"}
    # The client's address never reaches ClickHouse: only its /24 prefix and a keyed hash.
    assert {r["ip_prefix"] for r in stored} == {"127.0.0.0"}
    assert not any("127.0.0.1" in str(value) for r in stored for value in r.values())


def test_rollups_agree_with_the_raw_table(client, tenants, clickhouse_query, server_env):
    ws, host = site(tenants)
    events = [event(host, n % 3) for n in range(12)] + [event(host, 99, name="signup") for _ in range(2)]
    assert client.post("/pixel/track", json=events, headers={"User-Agent": CHROME}).status_code == 200
    assert wait_for_count(counter(server_env, ws["id"]), 14) == (14, 14)
    p = {"ws": ws["id"]}
    raw = clickhouse_query(
        "SELECT countIf(event = 'pageview'), count(), uniqExact(visitor_id) FROM events "
        "WHERE workspace_id = {ws:UInt64}",
        p,
    )[0]
    for table in ("pageviews_hourly", "pageviews_daily"):
        rolled = clickhouse_query(
            f"SELECT sum(pageviews), sum(events), uniqMerge(visitors) FROM {table} WHERE workspace_id = {{ws:UInt64}}",
            p,
        )[0]
        assert tuple(rolled) == tuple(raw), table
    top = clickhouse_query(
        "SELECT path, sum(pageviews) AS n FROM top_pages_daily WHERE workspace_id = {ws:UInt64} "
        "GROUP BY path ORDER BY path",
        p,
    )
    assert [tuple(r) for r in top] == [("/page/0", 4), ("/page/1", 4), ("/page/2", 4)]


# --- failures: a consumer killed, Kafka restarted ------------------------------------------


class Worker:
    """A `python -m ingest` of the test's own, which the test may kill and start again."""

    def __init__(self, env: dict, log_path: Path):
        self.env, self.log_path, self.process = env, log_path, None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextlib.contextmanager
def worker(env: dict, log_path: Path):
    w = Worker(env, log_path)
    w.start()
    try:
        yield w
    finally:
        w.stop()


def private_pipeline_env(server_env: dict, tmp_path: Path, **extra) -> dict:
    run = uuid.uuid4().hex[:8]
    return {
        **server_env,
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{run}.",
        "SLUICE_CONSUMER_GROUP": f"g-{run}",
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "SLUICE_SPOOL_DIR": str(tmp_path / "spool"),
        "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
        "SLUICE_LOG_LEVEL": "info",
        **extra,
    }


class Counter:
    """count() and uniqExact(event_id) of a workspace's events in the ClickHouse of `env`, read
    through its worker's HTTP interface; (0, 0) while no worker answers (it may be restarting)."""

    def __init__(self, env: dict, workspace_id: int):
        self.env, self.workspace_id = env, workspace_id

    def __call__(self) -> tuple[int, int]:
        try:
            rows = self.query(
                "SELECT count(), uniqExact(event_id) FROM events WHERE workspace_id = {ws:UInt64}",
                {"ws": self.workspace_id},
            )
        except Exception:  # noqa: BLE001 - the worker is restarting: nothing to read now
            return (0, 0)
        return tuple(rows[0])

    def rolled_up(self) -> int:
        """The workspace's events pageviews_daily counted: each INSERT feeds it, and no merge takes a
        duplicate out of it, as one may of the raw ReplacingMergeTree before count() sees it."""
        sql = "SELECT sum(events) FROM pageviews_daily WHERE workspace_id = {ws:UInt64}"
        return self.query(sql, {"ws": self.workspace_id})[0][0]

    def query(self, sql: str, parameters: dict) -> list[tuple]:
        reader = worker_reader(self.env["CLICKHOUSE_URL"])
        if reader is None:
            raise ConnectionError("no worker serves this ClickHouse directory now")
        try:
            return reader.query(sql, parameters=parameters).result_rows
        finally:
            reader.close()

    def settle(self, seconds: float = DRAIN_TIMEOUT) -> None:
        """Return once a sentinel sent to every partition behind what was counted is stored."""
        topics = Topics.with_prefix(self.env["SLUICE_KAFKA_TOPIC_PREFIX"])
        settle(self.query, topics, self.env["KAFKA_BOOTSTRAP_SERVERS"], max(seconds, 30))


def counter(env: dict, workspace_id: int) -> Counter:
    return Counter(env, workspace_id)


class Load(threading.Thread):
    """Sends `requests` batches of `size` events, each from its own client address; counts 2xx answers."""

    def __init__(self, url: str, host: str, requests: int, size: int, pause: float):
        super().__init__(daemon=True)
        self.url, self.host, self.requests, self.size, self.pause = url, host, requests, size, pause
        self.accepted, self.statuses = 0, []

    def run(self):
        with httpx.Client(base_url=self.url, timeout=30) as c:
            for i in range(self.requests):
                batch = [event(self.host, i * self.size + j) for j in range(self.size)]
                r = c.post(
                    "/api/v1/pixel/track",
                    json=batch,
                    headers={"User-Agent": CHROME, "X-Forwarded-For": f"10.9.{i // 250}.{i % 250 + 1}"},
                )
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.accepted += r.json()["accepted"]
                time.sleep(self.pause)


def wait_for_log(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {path}:\n{path.read_text()[-2000:]}"
        time.sleep(0.2)


def test_consumer_killed_mid_load_and_restarted_stores_each_event_once(server_env, tenants, tmp_path):
    ws, host = site(tenants)
    env = private_pipeline_env(server_env, tmp_path, SLUICE_CONSUMER_BATCH_ROWS="200", SLUICE_CONSUMER_BATCH_MS="100")
    log = tmp_path / "worker.log"
    count = counter(env, ws["id"])
    with running_api(env, tmp_path) as url, worker(env, log) as w:
        wait_for_log(log, "partitions assigned")
        load = Load(url, host, requests=60, size=50, pause=0.05)
        load.start()
        stored = wait_for_rows(count, KILL_AT)  # a batch is in; the load goes on
        w.kill()  # mid-stream: no graceful anything
        w.start()
        load.join(120)
        assert set(load.statuses) == {200}, load.statuses
        rows, distinct = wait_for_count(count, load.accepted)
        # A kill inside an INSERT can leave a batch out of the views it feeds (the retry skips its
        # rows, which are in): the rollup may count fewer, never more.
        rolled = count.rolled_up()
    assert stored < load.accepted == 60 * 50, "the kill should land while events still come"
    assert (rows, distinct) == (load.accepted, load.accepted)
    assert rolled <= load.accepted


# Kill once the first batch (SLUICE_CONSUMER_BATCH_ROWS=200) is in: the load is 3,000 events.
KILL_AT = 200


def wait_for_rows(count: Counter, at_least: int, timeout: float = DRAIN_TIMEOUT) -> int:
    """Poll until `count()` shows at least `at_least` rows; the rows seen."""
    deadline = time.monotonic() + timeout
    while (rows := count()[0]) < at_least:
        assert time.monotonic() < deadline, f"{rows} rows after {timeout} s, waiting for {at_least}"
        time.sleep(0.05)
    return rows


def test_kafka_restarted_during_load_spools_and_stores_each_event_once(server_env, tenants, tmp_path):
    ws, host = site(tenants)
    broker = DedicatedBroker(tmp_path / "kafka")
    broker.start()
    env = private_pipeline_env(
        server_env, tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, SLUICE_KAFKA_ACK_DEADLINE_MS="500"
    )
    log = tmp_path / "worker.log"
    try:
        with running_api(env, tmp_path) as url, worker(env, log):
            wait_for_log(log, "partitions assigned")
            load = Load(url, host, requests=80, size=25, pause=0.05)
            load.start()
            deadline = time.monotonic() + 60
            while len(load.statuses) < 5:  # the load is under way, its first answers from Kafka
                assert load.is_alive() and time.monotonic() < deadline, f"the load stalled: {load.statuses}"
                time.sleep(0.05)
            broker.stop(kill=True)  # a crash, not a controlled shutdown
            deadline = time.monotonic() + 60
            while (spooled := _metric(url, 'sluice_producer_records_total{destination="spool"}')) == 0:
                assert time.monotonic() < deadline, "no event went to the spool during the outage"
                time.sleep(0.2)
            broker.start()
            load.join(180)
            assert set(load.statuses) == {200}, load.statuses
            rows, distinct = wait_for_count(counter(env, ws["id"]), load.accepted, timeout=150)
            replayed = _metric(url, "sluice_spool_replayed_total")
    finally:
        broker.stop(kill=True)
    assert load.accepted == 80 * 25
    assert (rows, distinct) == (load.accepted, load.accepted)
    # Spooled records that Kafka acknowledged late are not replayed, so replayed ≤ spooled.
    assert spooled > 0 and replayed > 0, "the outage should have sent events through the spool"


def _metric(url: str, name: str) -> int:
    text = httpx.get(url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return int(float(match.group(1)))


@pytest.fixture(autouse=True)
def _need_worker(request):
    """The tests on the shared pipeline need the session's ingest worker."""
    if {"clickhouse_query"} & set(request.fixturenames):
        request.getfixturevalue("ingest_worker")


def test_analytics_tools_count_tracked_events_of_the_callers_workspace_only(
    client, tenants, clickhouse_query, server_env
):
    """Events tracked over HTTP, read back through the MCP analytics server of the shared API
    server, which reaches the worker's embedded ClickHouse through its query socket."""
    ws, host = site(tenants)
    other, other_host = site(tenants)
    ua = {"User-Agent": CHROME}
    mine = [event(host, n % 2) for n in range(6)] + [event(host, 7, name="signup")]
    assert client.post("/pixel/track", json=mine, headers=ua).status_code == 200
    assert client.post("/pixel/track", json=[event(other_host, 1)] * 4, headers=ua).status_code == 200
    assert wait_for_count(counter(server_env, ws["id"]), 7) == (7, 7)
    assert wait_for_count(counter(server_env, other["id"]), 4) == (4, 4)
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}

    def tool(name, **arguments):
        r = client.post(
            "/mcp/tools/call", json={"server": "analytics", "tool": name, "arguments": arguments}, headers=headers
        )
        assert r.status_code == 200, r.text
        return r.json()["result"]

    counts = {row["event"]: row["events"] for row in tool("event_counts")["rows"]}
    assert counts == {"pageview": 6, "signup": 1}
    pages = {row["path"]: row["events"] for row in tool("top_pages")["rows"]}
    assert pages == {"/page/0": 3, "/page/1": 3}  # the other workspace's /page/1 views are not here
    assert tool("unique_visitors")["visitors"] == 1  # one address and user agent: one visitor
