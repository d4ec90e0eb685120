"""The default failure threshold, as an operator who sets nothing gets it: README says an endpoint is
disabled after 10 failures in a row spanning 24 h. The dispatcher runs with the configuration read
from an environment without SLUICE_WEBHOOK_DISABLE_*, against real Postgres and a real HTTPS
receiver that always answers 500, on a clock the test moves instead of waiting a day."""

import os
import random
from datetime import timedelta

import orjson
import pytest

from ingest.webhooks import delivery
from ingest.webhooks.dispatcher import Dispatcher
from storage.config import load
from storage.postgres import webhooks
from tests.integration.ingest.test_dispatcher import Clock, deliveries, endpoint, make_key, unique_path
from tests.webhook_receiver import Answer

# README: "10 failures in a row spanning 24 h disable it too".
THRESHOLD = 10
SPAN = timedelta(hours=24)


@pytest.fixture
def workspace(tenants):
    return tenants.workspace()


@pytest.fixture
async def default_dispatch(pool, https_receiver):
    """(dispatcher, clock) configured as `python -m ingest.webhooks.dispatcher` would be when nothing
    sets the threshold; only the receiver's network and CA are allowed, as every delivery test does."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_WEBHOOK_DISABLE_")}
    environ |= {"SLUICE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "SLUICE_WEBHOOK_CA_BUNDLE": https_receiver.ca_path}
    config = load(environ).webhooks
    clock = Clock()
    async with delivery.create_client(config) as client:
        yield Dispatcher(pool, config, client, clock, random.Random(11)), clock


async def failing_endpoint(pool, workspace, https_receiver) -> dict:
    path = unique_path("always-500")
    https_receiver.script(path, Answer(500, body=b"down"))
    return await endpoint(pool, workspace, https_receiver, path, events=["api_key.created"])


async def health(pool, workspace, hook) -> dict:
    return await webhooks.get_endpoint(pool, workspace["id"], hook["id"])


async def retry_when_due(dispatcher, clock, pool, hook, times: int) -> None:
    """Move the clock to the one open delivery's next attempt and run it, `times` times over."""
    for _ in range(times):
        [row] = [r for r in await deliveries(pool, hook["id"]) if r["status"] == "retrying"]
        clock.at(row["next_attempt_at"])
        assert await dispatcher.run_once() >= 1


async def disabled_events(pool, hook) -> list[dict]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE event_type = 'webhook.disabled' AND payload->>'id' = $1", str(hook["id"])
    )
    return [orjson.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"] for r in rows]


async def test_nine_failures_over_more_than_a_day_leave_the_endpoint_on_and_the_tenth_disables_it(
    pool,
    default_dispatch,
    workspace,
    https_receiver,
):
    dispatcher, clock = default_dispatch
    hook = await failing_endpoint(pool, workspace, https_receiver)
    started = clock.now
    await make_key(pool, workspace, "first")
    await dispatcher.run_once()
    await retry_when_due(dispatcher, clock, pool, hook, 7)  # all 8 attempts of that delivery: ~27 h
    [first] = await deliveries(pool, hook["id"])
    assert (first["status"], first["attempt"]) == ("failed", 8)
    # A ninth failure, more than a day after the first.
    clock.at(max(clock.now, started + SPAN) + timedelta(hours=1))
    await make_key(pool, workspace, "second")
    await dispatcher.run_once()
    now = await health(pool, workspace, hook)
    assert (now["consecutive_failures"], now["failing_since"]) == (THRESHOLD - 1, started)
    assert clock.now - now["failing_since"] > SPAN
    assert (now["is_active"], now.get("disabled_reason")) == (True, None), "disabled after 9 failures"
    assert await disabled_events(pool, hook) == []
    # The tenth: the second delivery's retry.
    await retry_when_due(dispatcher, clock, pool, hook, 1)
    now = await health(pool, workspace, hook)
    assert (now["is_active"], now.get("disabled_reason")) == (False, "consecutive_failures"), (
        f"still enabled after {now['consecutive_failures']} failures over {clock.now - started}"
    )
    [event] = await disabled_events(pool, hook)
    assert (event["reason"], event["consecutive_failures"]) == ("consecutive_failures", THRESHOLD)
    assert {r["status"] for r in await deliveries(pool, hook["id"])} == {"failed"}


async def test_ten_failures_within_a_day_leave_the_endpoint_on_until_the_run_spans_24_hours(
    pool,
    default_dispatch,
    workspace,
    https_receiver,
):
    dispatcher, clock = default_dispatch
    hook = await failing_endpoint(pool, workspace, https_receiver)
    started = clock.now
    await make_key(pool, workspace, "first")
    await dispatcher.run_once()
    await retry_when_due(dispatcher, clock, pool, hook, 6)  # 7 attempts: 5 s … 10 h ± 20 % is under 22 h
    assert clock.now - started < SPAN - timedelta(hours=2)
    # Three more deliveries fail a minute later: ten failures in a row, spanning less than a day.
    clock.at(clock.now + timedelta(minutes=1))
    for name in ("b", "c", "d"):
        await make_key(pool, workspace, name)
    assert await dispatcher.run_once() == 3
    now = await health(pool, workspace, hook)
    assert (now["consecutive_failures"], now["failing_since"]) == (THRESHOLD, started)
    assert (now["is_active"], now.get("disabled_reason")) == (True, None), (
        f"disabled after {THRESHOLD} failures over only {clock.now - started}"
    )
    assert await disabled_events(pool, hook) == []
    # Exactly 24 h after the first failure, one more: the run now spans the day.
    clock.at(started + SPAN)
    await make_key(pool, workspace, "e")
    await dispatcher.run_once()
    now = await health(pool, workspace, hook)
    assert (now["is_active"], now.get("disabled_reason")) == (False, "consecutive_failures"), (
        f"still enabled after {now['consecutive_failures']} failures over {clock.now - started}"
    )
    [event] = await disabled_events(pool, hook)
    assert event["reason"] == "consecutive_failures" and event["consecutive_failures"] > THRESHOLD
