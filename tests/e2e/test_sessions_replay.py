"""Sessions do not depend on how the consumer got through the stream: a worker killed with SIGKILL
between an insert and its offset commit and restarted (its state rebuilt from ClickHouse) gives
every event the session an uninterrupted worker gives it, reading the same topic from its start
into an empty ClickHouse — which is also what replaying Kafka from the start does."""

import random
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from storage.clickhouse.client import open_reader
from tests.conftest import running_api
from tests.e2e.test_ingestion import (
    DRAIN_TIMEOUT,
    Worker,
    counter,
    private_pipeline_env,
    site,
    wait_for_count,
    worker,
)

VISITORS = 25
REQUESTS = 40
PER_REQUEST = 25
AGENTS = [f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/12{n}.0.0.0 Safari/537.36" for n in range(5)]


def send(url: str, host: str) -> int:
    """Bursts of events from VISITORS visitors whose clocks move on by up to 90 minutes between
    bursts (so some gaps end sessions), each burst's events out of order; how many were accepted."""
    rng = random.Random(20261202)
    now = datetime.now(UTC)
    clocks = [now - timedelta(hours=10) + timedelta(minutes=rng.uniform(0, 60)) for _ in range(VISITORS)]
    accepted = 0
    with httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
        for _ in range(REQUESTS):
            visitor = rng.randrange(VISITORS)
            clocks[visitor] = min(clocks[visitor] + timedelta(minutes=rng.uniform(0, 90)), now)
            size = 1 if rng.random() < 0.25 else PER_REQUEST  # some visits are one page: bounces
            minutes = [rng.uniform(0, 20) for _ in range(size)]
            batch = [
                {
                    "event": "pageview" if size == 1 else rng.choice(["pageview", "pageview", "pageview", "click"]),
                    "url": f"https://{host}/p/{rng.randrange(8)}",
                    "timestamp": (clocks[visitor] - timedelta(minutes=m))
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                }
                for m in minutes
            ]
            r = c.post(
                "/pixel/track",
                json=batch,
                headers={"X-Forwarded-For": f"192.0.2.{visitor + 1}", "User-Agent": AGENTS[visitor % len(AGENTS)]},
            )
            assert r.status_code == 200 and r.json()["accepted"] == size, r.text
            accepted += size
    return accepted


def stored_sessions(env: dict, workspace_id: int) -> tuple[dict, list]:
    reader = open_reader(env["CLICKHOUSE_URL"])
    try:
        p = {"ws": workspace_id}
        events = reader.query(
            "SELECT toString(event_id), session_id FROM events WHERE workspace_id = {ws:UInt64}", parameters=p
        ).result_rows
        sessions = reader.query(
            "SELECT session_id, visitor_id, start, end, pageviews, events, entry_page, exit_page, is_bounce, is_late "
            "FROM sessions WHERE workspace_id = {ws:UInt64} ORDER BY session_id",
            parameters=p,
        ).result_rows
    finally:
        reader.close()
    return dict(events), [tuple(s) for s in sessions]


def own(env: dict, tmp_path: Path, name: str, **extra) -> dict:
    """The pipeline's topics, read by a consumer group and into a ClickHouse of this run's own."""
    return {
        **env,
        "SLUICE_CONSUMER_GROUP": f"{env['SLUICE_CONSUMER_GROUP']}-{name}",
        "CLICKHOUSE_URL": f"chdb://{tmp_path / name}",
        **extra,
    }


def test_a_killed_worker_gives_every_event_the_session_an_uninterrupted_one_does(server_env, tenants, tmp_path):
    ws, host = site(tenants)
    env = private_pipeline_env(server_env, tmp_path)
    with running_api(env, tmp_path) as url:
        accepted = send(url, host)
    assert accepted > REQUESTS * PER_REQUEST // 2

    whole = own(env, tmp_path, "whole")
    with worker(whole, tmp_path / "whole.log"):
        assert wait_for_count(counter(whole, ws["id"]), accepted) == (accepted, accepted)
        expected_events, expected_sessions = stored_sessions(whole, ws["id"])

    # Small batches, and a SIGKILL at the dangerous moment: the third batch's rows (and every view
    # they feed) are in, its offsets not committed. A kill in the middle of an INSERT, between a
    # table's part and its views, is not covered: the views would miss that batch.
    broken = own(env, tmp_path, "broken", SLUICE_CONSUMER_BATCH_ROWS="50", SLUICE_CONSUMER_BATCH_MS="20")
    log = tmp_path / "broken.log"
    w = Worker({**broken, "SLUICE_FAULT_KILL_AFTER_BATCHES": "3"}, log)
    w.start()
    try:
        assert w.process.wait(DRAIN_TIMEOUT) == -signal.SIGKILL, log.read_text()[-3000:]
    finally:
        w.stop()
    count = counter(broken, ws["id"])
    with worker(broken, log):
        assert wait_for_count(count, accepted) == (accepted, accepted)
        events, sessions = stored_sessions(broken, ws["id"])
    assert "killing this worker now" in log.read_text()

    assert events == expected_events
    assert sessions == expected_sessions
    assert 1 < len(expected_sessions) < accepted // 2, "the stream should make sessions of several events"
    assert sum(s[5] for s in expected_sessions) == accepted
    assert any(s[8] for s in expected_sessions) and not all(s[8] for s in expected_sessions)  # some bounce
