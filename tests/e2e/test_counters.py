"""Counters rebuilt after Redis lost them, and their drift from the records, through the CLI:
usage recorded over HTTP, Redis keys deleted, `python -m app counters drift | rebuild`."""

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from app.cli.counters import period_bounds
from storage.clickhouse import client as clickhouse
from storage.redis.quota import counter_key
from tests.conftest import ROOT

STOCK = {"posts": 7, "storage": 1234}
METERED = {"api_calls": 5, "seo_reports": 2}


@pytest.fixture
def clickhouse_url(tmp_path):
    # A chdb directory of this test's own: the stack's shared one stays untouched.
    return f"chdb://{tmp_path}/ch"


@pytest.fixture
def counters_cli(database_url, clickhouse_url):
    env = {**os.environ, "DATABASE_URL": database_url, "CLICKHOUSE_URL": clickhouse_url}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app", "counters", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def enterprise_workspace(tenants) -> tuple[int, dict]:
    ws = tenants.workspace(tier="enterprise")
    return ws["id"], {"Authorization": f"Bearer {tenants.key(ws['id'], tier='enterprise')}"}


def record(client, headers, usage: dict) -> None:
    for feature, quantity in usage.items():
        r = client.post("/entitlements/usage", json={"feature": feature, "quantity": quantity}, headers=headers)
        assert r.status_code == 200, r.text


def log_metered(url: str, ws_id: int, usage: dict) -> None:
    """Write what the usage consumer will write once it exists (a later issue): rows in usage_events.

    Each quantity is split over two events; a replayed copy and last month's event must not count.
    """
    now = datetime.now(UTC)
    rows = []
    for feature, quantity in usage.items():
        rows += [event(ws_id, feature, quantity - 1, now), event(ws_id, feature, 1, now)]
    rows += [rows[0], event(ws_id, "api_calls", 1000, period_bounds(now)[1] - timedelta(seconds=1))]
    ch = clickhouse.connect(url)
    try:
        clickhouse.apply_schema(ch)
        ch.insert(
            "usage_events",
            rows,
            column_names=[
                "event_id",
                "workspace_id",
                "feature",
                "quantity",
                "metadata",
                "idempotency_key",
                "occurred_at",
            ],
        )
    finally:
        ch.close()  # chdb opens a directory in one process at a time; the CLI runs in another


def event(ws_id: int, feature: str, quantity: int, at: datetime) -> list:
    return [f"use_{uuid.uuid4().hex}", ws_id, feature, quantity, "{}", "", at]


def lose_counters(ws_id: int) -> None:
    """What Redis losing its data means for this workspace: its counter keys are gone."""
    period = period_bounds(datetime.now(UTC))[0]
    keys = [counter_key(ws_id, f) for f in STOCK] + [counter_key(ws_id, f, period) for f in METERED]
    with redis.Redis.from_url(os.environ["REDIS_URL"]) as r:
        assert r.delete(*keys) == len(keys)


def drift_rows(output: str, ws_id: int) -> dict[str, tuple[str, str, str]]:
    """feature → (redis, source, drift) from the printed table, for one workspace."""
    rows = [line.split() for line in output.splitlines()]
    return {row[1]: tuple(row[2:]) for row in rows if len(row) == 5 and row[0] == str(ws_id)}


def summary_used(client, headers) -> dict[str, int]:
    r = client.get("/entitlements/summary", headers=headers)
    assert r.status_code == 200, r.text
    return {feature: entry["used"] for feature, entry in r.json()["data"]["entitlements"].items()}


def test_rebuild_restores_counters_redis_lost_and_drift_reports_them_first(
    client, tenants, clickhouse_url, counters_cli
):
    ws_id, headers = enterprise_workspace(tenants)
    record(client, headers, {**STOCK, **METERED})
    log_metered(clickhouse_url, ws_id, METERED)
    before = summary_used(client, headers)
    assert before == {**STOCK, **METERED, "webhooks": 0}
    assert counters_cli("drift", "--workspace-id", str(ws_id)).returncode == 0

    lose_counters(ws_id)
    drift = counters_cli("drift", "--workspace-id", str(ws_id))
    assert drift.returncode == 1, drift.stderr
    assert drift_rows(drift.stdout, ws_id) == {f: ("-", str(n), f"-{n}") for f, n in {**STOCK, **METERED}.items()}

    rebuilt = counters_cli("rebuild", "--workspace-id", str(ws_id))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt 4" in rebuilt.stdout
    after = counters_cli("drift", "--workspace-id", str(ws_id), "--all")
    assert after.returncode == 0, after.stdout + after.stderr
    assert {row[2] for row in drift_rows(after.stdout, ws_id).values()} == {"+0"}
    assert summary_used(client, headers) == before


def test_rebuilt_counters_expire_as_the_quota_script_sets_them(client, tenants, clickhouse_url, counters_cli):
    ws_id, headers = enterprise_workspace(tenants)
    record(client, headers, {"posts": 3, "api_calls": 2})
    log_metered(clickhouse_url, ws_id, {"api_calls": 2})
    period = period_bounds(datetime.now(UTC))[0]
    stock_key, metered_key = counter_key(ws_id, "posts"), counter_key(ws_id, "api_calls", period)
    with redis.Redis.from_url(os.environ["REDIS_URL"]) as r:
        expected_expiry = r.expiretime(metered_key)
        r.delete(stock_key, metered_key)
        assert counters_cli("rebuild", "--workspace-id", str(ws_id)).returncode == 0
        assert (r.get(stock_key), r.ttl(stock_key)) == (b"3", -1)  # a stock level never expires
        assert (r.get(metered_key), r.expiretime(metered_key)) == (b"2", expected_expiry)


def test_drift_reports_a_counter_ahead_of_the_usage_log(client, tenants, counters_cli):
    # Metered usage counted in Redis but not (yet) in usage_events: consumer lag, or a lost record.
    ws_id, headers = enterprise_workspace(tenants)
    record(client, headers, {"api_calls": 4})
    drift = counters_cli("drift", "--workspace-id", str(ws_id))
    assert drift.returncode == 1
    assert drift_rows(drift.stdout, ws_id) == {"api_calls": ("4", "0", "+4")}


def test_counters_of_an_unknown_workspace_is_an_error(counters_cli):
    result = counters_cli("drift", "--workspace-id", "1")
    assert result.returncode != 0 and "not found: workspace 1" in result.stderr


def test_metered_counters_rebuild_from_the_usage_the_consumer_stored(
    client, tenants, database_url, ingest_env, clickhouse_query
):
    """The whole loop: usage over HTTP → Kafka → ingest worker → usage_events; Redis loses the
    counters; `counters rebuild` reads ClickHouse through the worker's query socket."""
    ws_id, headers = enterprise_workspace(tenants)
    record(client, headers, {"api_calls": 4, "seo_reports": 3})
    record(client, headers, {"api_calls": 2})
    count = "SELECT count() FROM usage_events WHERE workspace_id = {ws:UInt64}"
    deadline = time.monotonic() + 60
    while clickhouse_query(count, {"ws": ws_id})[0][0] < 3:
        assert time.monotonic() < deadline, "the usage records did not reach ClickHouse"
        time.sleep(0.3)
    period = period_bounds(datetime.now(UTC))[0]
    with redis.Redis.from_url(os.environ["REDIS_URL"]) as r:
        assert r.delete(*(counter_key(ws_id, f, period) for f in METERED)) == 2
    assert summary_used(client, headers)["api_calls"] == 0  # what Redis lost
    env = {**os.environ, "DATABASE_URL": database_url, "CLICKHOUSE_URL": ingest_env["CLICKHOUSE_URL"]}
    rebuilt = subprocess.run(
        [sys.executable, "-m", "app", "counters", "rebuild", "--workspace-id", str(ws_id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    used = summary_used(client, headers)
    assert (used["api_calls"], used["seo_reports"]) == (6, 3)
