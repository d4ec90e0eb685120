"""The webhook dispatcher against real Postgres and a real local HTTPS receiver: outbox events
fanned out, signed deliveries verified by `standardwebhooks`, the retry schedule and Retry-After
followed on a controllable clock, 410 and the failure threshold disabling endpoints, and a
worker that dies after claiming losing nothing."""

import asyncio
import ipaddress
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from standardwebhooks import Webhook

from app.access.tokens import generate_key
from ingest.webhooks import delivery
from ingest.webhooks.dispatcher import Dispatcher
from ingest.webhooks.signing import generate_secret
from storage.config import WebhooksConfig
from storage.postgres import api_keys, webhooks
from tests.webhook_receiver import Answer

# README, Webhooks, written out rather than imported from ingest/webhooks/retry_schedule.py, so a
# changed schedule fails here: retries after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (8 attempts),
# each ±20 %; Retry-After on 429/503 followed up to 10 h.
RETRY_DELAYS = {1: 5, 2: 300, 3: 1800, 4: 7200, 5: 18000, 6: 36000, 7: 36000}
ATTEMPTS = 8
JITTER = 0.2
RETRY_AFTER_CAP = 36000


class Clock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def at(self, when: datetime) -> None:
        self.now = when


@pytest.fixture
def settings(https_receiver):
    return WebhooksConfig(
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),),
        verify=https_receiver.ca_path,
        timeout_seconds=5,
        lease_seconds=60,
    )


@pytest.fixture
async def dispatch(pool, settings):
    """(dispatcher, clock) with the clock at the real time now."""
    clock = Clock()
    async with delivery.create_client(settings) as client:
        yield Dispatcher(pool, settings, client, clock, random.Random(7)), clock


@pytest.fixture
def workspace(tenants):
    return tenants.workspace()


def unique_path(name: str) -> str:
    return f"/{uuid.uuid4().hex[:12]}/{name}"


async def endpoint(pool, workspace, receiver, path, events=("*",), secret=None) -> dict:
    return await webhooks.create_endpoint(
        pool, workspace["id"], receiver.url(path), list(events), secret or generate_secret()
    )


async def make_key(pool, workspace, name="ci") -> dict:
    _, prefix, key_hash = generate_key()
    return await api_keys.create_key(pool, workspace["id"], name, prefix, key_hash, ["webhooks:read"], None, None)


async def deliveries(pool, endpoint_id) -> list[dict]:
    return [
        dict(r)
        for r in await pool.fetch("SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY id", endpoint_id)
    ]


async def test_a_domain_change_is_delivered_signed_and_verifies_with_standardwebhooks(
    pool, dispatch, workspace, https_receiver
):
    dispatcher, _ = dispatch
    path = unique_path("ok")
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.*"])
    key = await make_key(pool, workspace)
    assert await dispatcher.run_once() >= 1
    [got] = https_receiver.at(path)
    event = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert event["type"] == "api_key.created" and event["workspace_id"] == workspace["id"]
    assert event["data"]["id"] == key["id"] and "key_hash" not in event["data"]
    # A key created without a tier follows its workspace's: the event shows that tier, as the API does.
    assert event["data"]["rate_limit_tier"] == workspace["tier"] is not None
    assert got.headers["webhook-id"] == event["id"] and event["id"].startswith("evt_")
    [row] = await deliveries(pool, hook["id"])
    assert (row["status"], row["attempt"], row["response_code"], row["event_id"]) == ("success", 1, 200, event["id"])
    health = await webhooks.get_endpoint(pool, workspace["id"], hook["id"])
    assert (health["success_count"], health["failure_count"], health["consecutive_failures"]) == (1, 0, 0)
    assert health["last_delivery_at"] is not None


async def test_only_matching_active_endpoints_get_a_delivery(pool, dispatch, workspace, https_receiver):
    dispatcher, _ = dispatch
    paths = {name: unique_path(name) for name in ("star", "family", "other", "inactive")}
    await endpoint(pool, workspace, https_receiver, paths["star"], events=["*"])
    await endpoint(pool, workspace, https_receiver, paths["family"], events=["api_key.*"])
    await endpoint(pool, workspace, https_receiver, paths["other"], events=["seo.report.created"])
    off = await endpoint(pool, workspace, https_receiver, paths["inactive"], events=["*"])
    await webhooks.update_endpoint(pool, workspace["id"], off["id"], None, None, False)
    await make_key(pool, workspace)
    await dispatcher.run_once()
    assert {name: len(https_receiver.at(p)) for name, p in paths.items()} == {
        "star": 1,
        "family": 1,
        "other": 0,
        "inactive": 0,
    }


async def test_workspace_events_reach_the_other_workspaces_of_the_account(pool, dispatch, tenants, https_receiver):
    dispatcher, _ = dispatch
    first = tenants.workspace()
    path = unique_path("account")
    await endpoint(pool, first, https_receiver, path, events=["workspace.*"])
    second = tenants.workspace(account_id=first["account_id"])
    await dispatcher.run_once()
    [got] = https_receiver.at(path)
    event = orjson.loads(got.body)
    assert event["type"] == "workspace.created" and event["data"]["id"] == second["id"]


def within_jitter(gap: timedelta, seconds: float) -> bool:
    return seconds * (1 - JITTER) - 0.01 <= gap.total_seconds() <= seconds * (1 + JITTER) + 0.01


async def test_failures_are_retried_on_the_schedule_then_fail(pool, dispatch, workspace, https_receiver):
    dispatcher, clock = dispatch
    path = unique_path("down")
    https_receiver.script(path, Answer(500, body=b"down"))
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])
    await make_key(pool, workspace)
    await dispatcher.run_once()
    for attempt in range(1, ATTEMPTS):
        [row] = await deliveries(pool, hook["id"])
        assert (row["status"], row["attempt"], row["response_code"]) == ("retrying", attempt, 500)
        assert within_jitter(row["next_attempt_at"] - clock.now, RETRY_DELAYS[attempt])
        clock.at(row["next_attempt_at"] - timedelta(milliseconds=500))
        await dispatcher.run_once()  # not yet due: nothing is sent
        assert len(https_receiver.at(path)) == attempt
        clock.at(row["next_attempt_at"])
        await dispatcher.run_once()
    [row] = await deliveries(pool, hook["id"])
    assert (row["status"], row["attempt"], row["next_attempt_at"]) == ("failed", ATTEMPTS, None)
    assert len(https_receiver.at(path)) == ATTEMPTS
    bodies = {r.body for r in https_receiver.at(path)}
    ids = {r.headers["webhook-id"] for r in https_receiver.at(path)}
    assert len(bodies) == 1 and len(ids) == 1  # the same event, byte for byte, every time
    attempts = await pool.fetch(
        "SELECT attempt, status_code FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id", row["id"]
    )
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(n, 500) for n in range(1, ATTEMPTS + 1)]


@pytest.mark.parametrize(
    "status, retry_after, expected_seconds",
    [
        (429, "120", 120),
        (503, "120", 120),
        (429, str(10**7), RETRY_AFTER_CAP),  # bounded
        (503, str(RETRY_AFTER_CAP - 1), RETRY_AFTER_CAP - 1),  # up to the cap: followed as given
        (500, "120", None),  # only 429 and 503 carry a Retry-After worth obeying
        (429, "1", None),  # never sooner than the schedule
    ],
)
async def test_retry_after_is_honoured_within_bounds(
    pool, dispatch, workspace, https_receiver, status, retry_after, expected_seconds
):
    dispatcher, clock = dispatch
    path = unique_path("busy")
    https_receiver.script(path, Answer(status, headers={"Retry-After": retry_after}))
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])
    await make_key(pool, workspace)
    await dispatcher.run_once()
    [row] = await deliveries(pool, hook["id"])
    gap = (row["next_attempt_at"] - clock.now).total_seconds()
    if expected_seconds is None:
        assert within_jitter(row["next_attempt_at"] - clock.now, RETRY_DELAYS[1])
    else:
        assert gap == pytest.approx(expected_seconds, abs=0.01)


async def test_410_gone_disables_the_endpoint_at_once_and_stops_its_deliveries(
    pool, dispatch, workspace, https_receiver
):
    dispatcher, _ = dispatch
    path = unique_path("gone")
    https_receiver.script(path, Answer(410), Answer(200))
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])
    dispatcher.config = replace(dispatcher.config, per_endpoint_concurrency=1)
    await make_key(pool, workspace, "one")
    await make_key(pool, workspace, "two")
    await dispatcher.run_once()
    assert len(https_receiver.at(path)) == 1
    health = await webhooks.get_endpoint(pool, workspace["id"], hook["id"])
    assert (health["is_active"], health["disabled_reason"]) == (False, "gone")
    assert sorted(r["status"] for r in await deliveries(pool, hook["id"])) == ["failed", "failed"]
    announced = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'webhook.disabled' AND payload->>'id' = $1", str(hook["id"])
    )
    assert announced == 1
    enabled = await webhooks.update_endpoint(pool, workspace["id"], hook["id"], None, None, True)
    assert (enabled["is_active"], enabled["disabled_reason"], enabled["consecutive_failures"]) == (True, None, 0)


async def test_continuous_failures_past_the_threshold_disable_and_another_endpoint_hears_it(
    pool, dispatch, workspace, https_receiver
):
    dispatcher, clock = dispatch
    dispatcher.config = replace(dispatcher.config, disable_after_failures=3, disable_after_hours=1)
    failing, watcher = unique_path("failing"), unique_path("watcher")
    https_receiver.script(failing, Answer(500))
    hook = await endpoint(pool, workspace, https_receiver, failing, events=["api_key.created"])
    await endpoint(pool, workspace, https_receiver, watcher, events=["webhook.disabled"])
    for name in ("a", "b", "c"):
        await make_key(pool, workspace, name)
    await dispatcher.run_once()  # three failures in a row, but within the hour: still enabled
    assert (await webhooks.get_endpoint(pool, workspace["id"], hook["id"]))["is_active"]
    clock.at(clock.now + timedelta(hours=2))
    await dispatcher.run_once()  # failing for two hours now: disabled, and announced
    health = await webhooks.get_endpoint(pool, workspace["id"], hook["id"])
    assert (health["is_active"], health["disabled_reason"]) == (False, "consecutive_failures")
    assert health["consecutive_failures"] >= 4 and health["failure_count"] == health["consecutive_failures"]
    await dispatcher.run_once()
    [got] = https_receiver.at(watcher)
    event = orjson.loads(got.body)
    assert event["type"] == "webhook.disabled" and event["data"]["id"] == hook["id"]
    assert {r["status"] for r in await deliveries(pool, hook["id"])} == {"failed"}


async def test_a_redirect_is_a_failure_and_is_not_followed(pool, dispatch, workspace, https_receiver):
    dispatcher, _ = dispatch
    path, target = unique_path("moved"), unique_path("target")
    https_receiver.script(path, Answer(302, headers={"Location": https_receiver.url(target)}))
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])
    await make_key(pool, workspace)
    await dispatcher.run_once()
    [row] = await deliveries(pool, hook["id"])
    assert (row["status"], row["response_code"]) == ("retrying", 302) and "redirect" in row["error"]
    assert https_receiver.at(target) == []


async def test_a_worker_dying_between_claim_and_send_loses_nothing_and_sends_once(
    pool, dispatch, settings, workspace, https_receiver
):
    dispatcher, clock = dispatch
    path = unique_path("crash")
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])
    await make_key(pool, workspace)
    await dispatcher.fan_out()
    # Another worker claims everything due and dies before sending.
    lease = timedelta(seconds=settings.lease_seconds)
    dead = await webhooks.claim_due(pool, clock.now, lease, 10_000, 10_000, {})
    assert hook["id"] in {c.endpoint_id for c in dead}
    await dispatcher.run_once()
    assert https_receiver.at(path) == []  # leased: nobody else sends it meanwhile
    clock.at(clock.now + lease + timedelta(seconds=1))
    await dispatcher.run_once()
    await dispatcher.run_once()
    assert len(https_receiver.at(path)) == 1
    [row] = await deliveries(pool, hook["id"])
    assert (row["status"], row["attempt"]) == ("success", 1)


async def test_a_late_result_from_a_worker_whose_lease_ran_out_is_not_recorded(
    pool, dispatch, settings, workspace, https_receiver
):
    dispatcher, clock = dispatch
    hook = await endpoint(pool, workspace, https_receiver, unique_path("late"), events=["api_key.created"])
    await make_key(pool, workspace)
    await dispatcher.fan_out()
    lease = timedelta(seconds=settings.lease_seconds)
    [slow] = [
        c for c in await webhooks.claim_due(pool, clock.now, lease, 10_000, 10_000, {}) if c.endpoint_id == hook["id"]
    ]
    clock.at(clock.now + lease + timedelta(seconds=1))
    await dispatcher.run_once()  # takes over and succeeds
    outcome = webhooks.Outcome("retrying", 500, "", "HTTP 500", 10, clock.now, clock.now)
    assert await webhooks.record_outcome(pool, slow, outcome, 10, timedelta(hours=1)) is None
    [row] = await deliveries(pool, hook["id"])
    assert (row["status"], row["attempt"]) == ("success", 1)


async def test_rotation_sends_both_signatures_until_the_grace_period_ends(pool, dispatch, workspace, https_receiver):
    dispatcher, clock = dispatch
    path = unique_path("rotating")
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])
    rotated = await webhooks.rotate_secret(pool, workspace["id"], hook["id"], generate_secret(), 1)
    await make_key(pool, workspace)
    await dispatcher.run_once()
    [got] = https_receiver.at(path)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(hook["secret"]).verify(got.body, got.headers)
    Webhook(rotated["secret"]).verify(got.body, got.headers)
    clock.at(rotated["previous_secret_expires_at"] + timedelta(seconds=1))
    await make_key(pool, workspace)
    await dispatcher.run_once()
    later = https_receiver.at(path)[1]
    assert len(later.headers["webhook-signature"].split(" ")) == 1


async def wait_for(predicate, seconds=60, describe=lambda: "timed out"):
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"after {seconds} s: {describe()}"
        await asyncio.sleep(0.05)


async def test_a_slow_endpoint_does_not_hold_up_the_others(pool, settings, workspace, https_receiver):
    """All six sends to the fast endpoint arrive while the slow endpoint's first answer is still held:
    an order of events, not a duration, so a loaded machine cannot make it pass or fail."""
    slow, fast = unique_path("slow"), unique_path("fast")
    release = threading.Event()
    https_receiver.script(slow, Answer(200, hold=release))
    await endpoint(pool, workspace, https_receiver, slow, events=["api_key.created"])
    await endpoint(pool, workspace, https_receiver, fast, events=["api_key.created"])
    for n in range(6):
        await make_key(pool, workspace, f"k{n}")
    # A timeout longer than the wait: the slow send stays in flight until the test releases it.
    settings = replace(settings, per_endpoint_concurrency=1, concurrency=4, poll_seconds=0.05, timeout_seconds=300)
    stopping = asyncio.Event()
    async with delivery.create_client(settings) as client:
        task = asyncio.create_task(Dispatcher(pool, settings, client).run(stopping))
        try:

            async def all_fast_sent():
                return len(https_receiver.at(fast)) == 6

            await wait_for(all_fast_sent, 60, lambda: f"fast endpoint got {len(https_receiver.at(fast))} of 6")
            in_flight_slow = len(https_receiver.at(slow))
        finally:
            release.set()
            stopping.set()
            await task
    assert in_flight_slow == 1  # one at a time to the slow endpoint, and its answer not given yet


def start_worker(database_url, receiver, log_path):
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SLUICE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SLUICE_WEBHOOK_CA_BUNDLE": receiver.ca_path,
        "SLUICE_WEBHOOK_LEASE_SECONDS": "2",
        "SLUICE_WEBHOOK_POLL_SECONDS": "0.1",
    }
    with open(log_path, "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ingest.webhooks.dispatcher"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def test_a_worker_killed_mid_send_is_replaced_and_the_event_delivered(
    pool, database_url, workspace, https_receiver, tmp_path
):
    path = unique_path("killed")
    release = threading.Event()
    https_receiver.script(path, Answer(200, hold=release), Answer(200))  # the first send never gets its answer
    hook = await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])
    await make_key(pool, workspace)
    worker = start_worker(database_url, https_receiver, tmp_path / "worker.log")
    try:

        async def sending():
            return len(https_receiver.at(path)) == 1

        await wait_for(sending)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    [row] = await deliveries(pool, hook["id"])
    assert (row["status"], row["attempt"]) == ("pending", 0)
    worker = start_worker(database_url, https_receiver, tmp_path / "worker.log")
    try:

        async def delivered():
            [row] = await deliveries(pool, hook["id"])
            return row["status"] == "success"

        await wait_for(delivered)
    finally:
        release.set()  # the killed worker's connection: let its handler thread end
        worker.terminate()
        assert worker.wait(15) == 0, (tmp_path / "worker.log").read_text()
    sent = https_receiver.at(path)
    assert len(sent) == 2 and sent[0].body == sent[1].body  # at least once: the unanswered send, then one more
    assert sent[0].headers["webhook-id"] == sent[1].headers["webhook-id"]
    [row] = await deliveries(pool, hook["id"])
    assert row["attempt"] == 1


async def test_seo_and_limit_events_are_delivered_and_the_limit_only_once_a_period(
    pool, dispatch, workspace, https_receiver
):
    from storage.postgres import outbox, seo_reports

    dispatcher, _ = dispatch
    path = unique_path("seo-limit")
    await endpoint(pool, workspace, https_receiver, path, events=["seo.*", "entitlement.*"])
    scores = {"performance": 85, "accessibility": 92, "best_practices": 88, "seo": 95}
    report = await seo_reports.create_report(
        pool, workspace["id"], "https://example.com/", scores, [], on_created=outbox.emit_seo_report_created
    )
    for _ in range(3):
        await outbox.emit_limit_reached(pool, workspace["id"], "api_calls", 1000, 1000, "2026-11", None)
    await dispatcher.run_once()
    events = [orjson.loads(r.body) for r in https_receiver.at(path)]
    assert sorted(e["type"] for e in events) == ["entitlement.limit_reached", "seo.report.created"]
    seo = next(e for e in events if e["type"] == "seo.report.created")
    assert seo["data"]["id"] == report["id"] and seo["data"]["scores"] == scores
