"""Entitlements over HTTP: check, usage (atomic under 500 concurrent callers), summary, overrides,
event ids, validation, and failing closed when Redis or Kafka is away."""

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer

from ingest.events import Topics, workspace_key
from storage.postgres import entitlements
from tests.conftest import _free_port, running_api
from tests.e2e.spool_contents import spooled_records

UPGRADE_URL = "https://sluice.dev/upgrade"
CACHE_SECONDS = 1  # SLUICE_ENTITLEMENTS_CACHE_SECONDS of the test server (tests/conftest.py)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def workspace(tenants, tier: str = "pro", scopes=("entitlements:read", "entitlements:write")) -> tuple[dict, dict]:
    """A workspace of `tier` and a key of it (rate-limited at the workspace's tier: 60/min on free)."""
    ws = tenants.workspace(tier=tier)
    return ws, bearer(tenants.key(ws["id"], scopes=scopes))


def use(client, headers, feature, quantity=1, **extra) -> httpx.Response:
    return client.post("/entitlements/usage", json={"feature": feature, "quantity": quantity, **extra}, headers=headers)


def stored_usage(tenants, ws_id: int, feature: str):
    return tenants.fetchval(
        "SELECT used FROM entitlement_usage WHERE workspace_id = $1 AND feature = $2", ws_id, feature
    )


def next_month() -> str:
    now = datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00Z"


# --- check --------------------------------------------------------------------------------


def test_check_within_the_limit_answers_the_spec_s_allowed_shape(client, tenants):
    ws, headers = workspace(tenants, "pro")
    assert use(client, headers, "posts", 45).status_code == 200
    r = client.get("/entitlements/check", params={"feature": "posts"}, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"allowed": True, "feature": "posts", "current_usage": 45, "limit": 1000, "available": 955}


def test_check_past_the_limit_answers_the_spec_s_refusal_and_changes_nothing(client, tenants):
    ws, headers = workspace(tenants, "starter")
    assert use(client, headers, "posts", 100).status_code == 200
    r = client.get("/entitlements/check", params={"feature": "posts", "quantity": 1}, headers=headers)
    assert r.status_code == 200
    assert r.json() == {
        "allowed": False,
        "feature": "posts",
        "reason": "LIMIT_EXCEEDED",
        "message": "Post limit exceeded. Used: 100, Limit: 100",
        "current_usage": 100,
        "limit": 100,
        "available": 0,
        "upgrade_url": UPGRADE_URL,
    }
    assert stored_usage(tenants, ws["id"], "posts") == 100


def test_check_counts_the_quantity_asked_for(client, tenants):
    ws, headers = workspace(tenants, "free")
    assert use(client, headers, "posts", 6).status_code == 200

    def check(q):
        return client.get("/entitlements/check", params={"feature": "posts", "quantity": q}, headers=headers)

    assert check(4).json()["allowed"] is True
    refused = check(5).json()
    assert refused["allowed"] is False and refused["available"] == 4
    assert refused["message"] == "Post limit exceeded. Used: 6, Limit: 10"


def test_check_of_an_unused_feature_is_zero(client, tenants):
    ws, headers = workspace(tenants, "free")
    r = client.get("/entitlements/check", params={"feature": "seo_reports", "quantity": 10}, headers=headers)
    assert r.json() == {"allowed": True, "feature": "seo_reports", "current_usage": 0, "limit": 10, "available": 10}


# --- usage --------------------------------------------------------------------------------


def test_usage_increments_and_is_written_through_to_postgres_for_stock(client, tenants):
    ws, headers = workspace(tenants, "pro")
    r = use(client, headers, "posts", 3, metadata={"post_id": 17})
    assert r.status_code == 200
    assert r.json() == {"recorded": True, "feature": "posts", "current_usage": 3, "limit": 1000}
    assert use(client, headers, "posts").json()["current_usage"] == 4  # quantity defaults to 1 as well
    assert client.post("/entitlements/usage", json={"feature": "posts"}, headers=headers).json()["current_usage"] == 5
    assert stored_usage(tenants, ws["id"], "posts") == 5


def test_metered_usage_reports_reset_at_and_counts_per_month(client, tenants):
    ws, headers = workspace(tenants, "pro")
    r = use(client, headers, "api_calls", 5001, metadata={"endpoint": "/api/v1/posts"})
    assert r.status_code == 200
    assert r.json() == {
        "recorded": True,
        "feature": "api_calls",
        "current_usage": 5001,
        "limit": 10000,
        "reset_at": next_month(),
    }
    assert stored_usage(tenants, ws["id"], "api_calls") is None  # metered usage is not kept in Postgres
    period = datetime.now(UTC).strftime("%Y-%m")
    r_client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        key = f"sluice:quota:{{ws:{ws['id']}}}:api_calls:{period}"
        assert int(r_client.get(key)) == 5001
        expires_in = r_client.ttl(key)
        reset = datetime.fromisoformat(next_month().replace("Z", "+00:00")).timestamp()
        assert reset - time.time() < expires_in <= reset - time.time() + 8 * 86400  # a week past the month
    finally:
        r_client.close()


def test_usage_past_the_limit_is_refused_with_the_spec_s_403(client, tenants):
    ws, headers = workspace(tenants, "free")
    assert use(client, headers, "posts", 8).status_code == 200
    r = use(client, headers, "posts", 3)  # would make 11 of 10: refused whole, nothing counted
    assert r.status_code == 403
    assert r.json() == {
        "error": "feature_limit_reached",
        "message": "You have reached your limit for this feature.",
        "feature": "posts",
        "upgrade_url": UPGRADE_URL,
    }
    assert use(client, headers, "posts", 2).json()["current_usage"] == 10
    assert use(client, headers, "posts", 1).status_code == 403
    assert stored_usage(tenants, ws["id"], "posts") == 10


def test_metered_limit_is_enforced_too(client, tenants):
    ws, headers = workspace(tenants, "free")
    assert use(client, headers, "seo_reports", 10).status_code == 200
    r = use(client, headers, "seo_reports")
    assert r.status_code == 403 and r.json()["feature"] == "seo_reports"


async def test_500_concurrent_usage_calls_never_pass_the_limit(api, tenants):
    ws, headers = workspace(tenants, "pro")  # free's 60 requests/min would refuse most of them
    tenants.run(lambda pool: entitlements.set_override(pool, ws["id"], "posts", 100))
    async with httpx.AsyncClient(base_url=api + "/api/v1", timeout=60, limits=httpx.Limits(max_connections=500)) as c:
        responses = await asyncio.gather(
            *[
                c.post("/entitlements/usage", json={"feature": "posts", "quantity": 1}, headers=headers)
                for _ in range(500)
            ]
        )
        summary = (await c.get("/entitlements/summary", headers=headers)).json()
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 403]
    assert (len(accepted), len(refused)) == (100, 400)
    # Each accepted call saw its own place in the counter: every value from 1 to 100 once.
    assert sorted(r.json()["current_usage"] for r in accepted) == list(range(1, 101))
    assert all(r.json()["error"] == "feature_limit_reached" for r in refused)
    assert summary["data"]["entitlements"]["posts"]["used"] == 100
    assert stored_usage(tenants, ws["id"], "posts") == 100


def test_negative_quantity_releases_stock_and_stops_at_zero(client, tenants):
    ws, headers = workspace(tenants, "free")
    assert use(client, headers, "posts", 10).status_code == 200
    assert use(client, headers, "posts").status_code == 403
    r = use(client, headers, "posts", -2)
    assert r.status_code == 200 and r.json()["current_usage"] == 8
    assert use(client, headers, "posts", 2).json()["current_usage"] == 10  # released room is usable again
    assert use(client, headers, "posts", -25).json()["current_usage"] == 0  # clamped, not negative
    assert stored_usage(tenants, ws["id"], "posts") == 0


def test_repeated_event_id_is_counted_once(client, tenants):
    ws, headers = workspace(tenants, "pro")
    first = use(client, headers, "posts", 2, event_id="evt-1")
    assert first.json() == {"recorded": True, "feature": "posts", "current_usage": 2, "limit": 1000}
    assert use(client, headers, "posts", 3, event_id="evt-2").json()["current_usage"] == 5
    again = use(client, headers, "posts", 2, event_id="evt-1")
    assert again.status_code == 200
    assert again.json() == {"recorded": True, "feature": "posts", "current_usage": 2, "limit": 1000, "duplicate": True}
    assert stored_usage(tenants, ws["id"], "posts") == 5
    # The id is per feature: the same id on another feature is another event.
    assert use(client, headers, "webhooks", 1, event_id="evt-1").json()["current_usage"] == 1


async def test_concurrent_repeats_of_one_event_id_count_once(api, tenants):
    ws, headers = workspace(tenants, "pro")
    async with httpx.AsyncClient(base_url=api + "/api/v1", timeout=30) as c:
        responses = await asyncio.gather(
            *[
                c.post(
                    "/entitlements/usage",
                    json={"feature": "api_calls", "quantity": 7, "event_id": "batch-42"},
                    headers=headers,
                )
                for _ in range(50)
            ]
        )
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["current_usage"] for r in responses} == {7}
    assert sum("duplicate" not in r.json() for r in responses) == 1


def test_refused_event_id_is_not_remembered(client, tenants):
    ws, headers = workspace(tenants, "free")
    assert use(client, headers, "webhooks", 2, event_id="hook-a").status_code == 403
    assert use(client, headers, "webhooks", 1, event_id="hook-a").json()["current_usage"] == 1


async def test_accepted_usage_is_published_to_the_usage_log(client, tenants, ingest_env):
    ws, headers = workspace(tenants, "pro")
    key = str(uuid.uuid4())
    r = client.post(
        "/entitlements/usage",
        json={"feature": "storage", "quantity": 4096, "metadata": {"file": "a.png"}},
        headers={**headers, "Idempotency-Key": key},
    )
    assert r.status_code == 200
    event = await find_usage_event(ingest_env, ws["id"])
    assert event.pop("event_id").startswith("use_")
    occurred_at = event.pop("occurred_at")  # ClickHouse's DateTime64(3) text, UTC
    assert datetime.strptime(occurred_at, "%Y-%m-%d %H:%M:%S.%f")
    assert event == {
        "workspace_id": ws["id"],
        "feature": "storage",
        "quantity": 4096,
        "metadata": '{"file":"a.png"}',
        "idempotency_key": key,
    }


async def find_usage_event(ingest_env: dict, workspace_id: int, timeout: float = 20) -> dict:
    topic = Topics.with_prefix(ingest_env["SLUICE_KAFKA_TOPIC_PREFIX"]).usage
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event["workspace_id"] == workspace_id:
                        return event
        raise AssertionError(f"no usage record of workspace {workspace_id} in {topic}")
    finally:
        await consumer.stop()


# --- summary and overrides ----------------------------------------------------------------


def test_summary_has_every_feature_with_the_spec_s_fields(client, tenants):
    ws, headers = workspace(tenants, "pro")
    for feature, quantity in (("posts", 45), ("api_calls", 5001), ("storage", 1_073_741_824)):
        assert use(client, headers, feature, quantity).status_code == 200
    r = client.get("/entitlements/summary", headers=headers)
    assert r.status_code == 200
    reset_at = next_month()
    assert r.json() == {
        "data": {
            "workspace_id": ws["id"],
            "tier": "pro",
            "entitlements": {
                "posts": {"used": 45, "limit": 1000, "available": 955, "percentage": 4.5},
                "api_calls": {
                    "used": 5001,
                    "limit": 10000,
                    "available": 4999,
                    "percentage": 50.01,
                    "reset_at": reset_at,
                },
                "storage": {
                    "used": 1073741824,
                    "limit": 5368709120,
                    "available": 4294967296,
                    "percentage": 20,
                    "unit": "bytes",
                },
                "webhooks": {"used": 0, "limit": 20, "available": 20, "percentage": 0},
                "seo_reports": {"used": 0, "limit": 1000, "available": 1000, "percentage": 0, "reset_at": reset_at},
            },
        }
    }


def watch_for_change(read, changed, cached_since: float, written: float) -> tuple[dict, float]:
    """Polls `read()` until `changed(answer)`; that answer, and when its request was sent.

    A process keeps a plan CACHE_SECONDS from when it read it: the plan read for the request sent at
    `cached_since` hides the change from every answer received before cached_since + CACHE_SECONDS,
    and every request sent CACHE_SECONDS after the change was `written` sees it. The times are
    measured here, on the monotonic clock the server's cache uses too."""
    while True:
        sent = time.monotonic()
        answer = read()
        received = time.monotonic()
        if changed(answer):
            assert received >= cached_since + CACHE_SECONDS, f"seen {received - cached_since:.2f} s after caching"
            return answer, sent
        assert sent < written + CACHE_SECONDS, f"not seen {sent - written:.2f} s after the change: {answer}"
        time.sleep(0.05)


def test_override_in_postgres_applies_after_the_cache_ttl(client, tenants):
    ws, headers = workspace(tenants, "free")

    def check():
        return client.get("/entitlements/check", params={"feature": "posts"}, headers=headers).json()

    primed = time.monotonic()
    assert check()["limit"] == 10  # the workspace's first request: its plan is read and cached now
    tenants.run(lambda pool: entitlements.set_override(pool, ws["id"], "posts", 25))
    _, cached_since = watch_for_change(check, lambda a: a["limit"] == 25, primed, time.monotonic())
    assert use(client, headers, "posts", 25).json()["current_usage"] == 25
    summary = client.get("/entitlements/summary", headers=headers).json()["data"]
    assert summary["tier"] == "free" and summary["entitlements"]["posts"]["limit"] == 25
    tenants.run(lambda pool: entitlements.delete_override(pool, ws["id"], "posts"))
    after, _ = watch_for_change(check, lambda a: a["limit"] == 10, cached_since, time.monotonic())
    assert (after["allowed"], after["limit"], after["available"]) == (False, 10, 0)


def test_workspace_tier_change_applies_after_the_cache_ttl(client, tenants):
    ws, headers = workspace(tenants, "free")

    def summary():
        return client.get("/entitlements/summary", headers=headers).json()["data"]

    primed = time.monotonic()
    assert summary()["tier"] == "free"
    tenants.execute("UPDATE workspaces SET tier = 'agency' WHERE id = $1", ws["id"])
    data, _ = watch_for_change(summary, lambda d: d["tier"] == "agency", primed, time.monotonic())
    assert data["entitlements"]["posts"]["limit"] == 10_000


def test_lost_stock_counter_is_rebuilt_from_postgres(client, tenants):
    ws, headers = workspace(tenants, "pro")
    assert use(client, headers, "posts", 7).status_code == 200
    r_client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        r_client.delete(f"sluice:quota:{{ws:{ws['id']}}}:posts")
        assert (
            client.get("/entitlements/check", params={"feature": "posts"}, headers=headers).json()["current_usage"] == 7
        )
        r_client.delete(f"sluice:quota:{{ws:{ws['id']}}}:posts")
        assert use(client, headers, "posts", 1).json()["current_usage"] == 8
    finally:
        r_client.close()


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "feature"),
        ({"feature": "likes"}, "feature"),
        ({"feature": ""}, "feature"),  # an empty parameter is an absent one (BlackSheep's query parsing)
        ({"feature": "posts", "quantity": "0"}, "quantity"),
        ({"feature": "posts", "quantity": "-1"}, "quantity"),
        ({"feature": "posts", "quantity": "1.5"}, "quantity"),
        ({"feature": "posts", "quantity": "abc"}, "quantity"),
        ({"feature": "posts", "quantity": "²"}, "quantity"),
        ({"feature": "posts", "quantity": "1" * 5000}, "quantity"),
        ({"feature": "posts", "quantity": str(10**15 + 1)}, "quantity"),
        ({"feature": ["posts", "storage"]}, "feature"),
        ({"feature": "posts", "quantity": ["1", "2"]}, "quantity"),
    ],
)
def test_check_refuses_each_bad_parameter_by_name(client, tenants, params, field):
    ws, headers = workspace(tenants)
    r = client.get("/entitlements/check", params=params, headers=headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_failed" and list(body["errors"]) == [field]


def test_check_names_every_bad_parameter_at_once(client, tenants):
    ws, headers = workspace(tenants)
    r = client.get("/entitlements/check", params={"feature": "likes", "quantity": "0"}, headers=headers)
    assert r.json()["errors"] == {
        "feature": ["The feature must be one of: posts, api_calls, storage, webhooks, seo_reports."],
        "quantity": ["The quantity must be an integer between 1 and 1000000000000000."],
    }


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "feature"),
        ({"feature": "likes"}, "feature"),
        ({"feature": 5}, "feature"),
        ({"feature": "posts", "quantity": 0}, "quantity"),
        ({"feature": "posts", "quantity": "1"}, "quantity"),
        ({"feature": "posts", "quantity": 1.5}, "quantity"),
        ({"feature": "posts", "quantity": True}, "quantity"),
        ({"feature": "posts", "quantity": None}, "quantity"),
        ({"feature": "posts", "quantity": 10**15 + 1}, "quantity"),
        ({"feature": "posts", "quantity": -(10**15) - 1}, "quantity"),
        ({"feature": "api_calls", "quantity": -1}, "quantity"),
        ({"feature": "seo_reports", "quantity": -3}, "quantity"),
        ({"feature": "posts", "metadata": "x"}, "metadata"),
        ({"feature": "posts", "metadata": [1, 2]}, "metadata"),
        ({"feature": "posts", "metadata": {"blob": "x" * 2040}}, "metadata"),
        ({"feature": "posts", "event_id": ""}, "event_id"),
        ({"feature": "posts", "event_id": "   "}, "event_id"),
        ({"feature": "posts", "event_id": "e" * 101}, "event_id"),
        ({"feature": "posts", "event_id": 7}, "event_id"),
        ({"feature": "posts", "units": 3}, "units"),
    ],
)
def test_usage_refuses_each_bad_field_by_name(client, tenants, body, field):
    ws, headers = workspace(tenants)
    r = client.post("/entitlements/usage", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_failed" and list(r.json()["errors"]) == [field]
    assert stored_usage(tenants, ws["id"], "posts") is None


def test_usage_accepts_metadata_up_to_2_kb_and_null(client, tenants):
    ws, headers = workspace(tenants)
    blob = {"blob": "x" * (2048 - len('{"blob":""}'))}
    assert len(orjson.dumps(blob)) == 2048
    assert use(client, headers, "posts", metadata=blob).status_code == 200
    assert use(client, headers, "posts", metadata=None).status_code == 200
    assert use(client, headers, "posts", event_id="e" * 100).status_code == 200


def test_usage_names_every_bad_field_at_once(client, tenants):
    ws, headers = workspace(tenants)
    r = client.post(
        "/entitlements/usage", json={"feature": "api_calls", "quantity": -1, "metadata": 3}, headers=headers
    )
    assert r.json()["errors"] == {
        "quantity": ["The quantity must be at least 1: api_calls is metered and cannot be given back."],
        "metadata": ["The metadata must be an object."],
    }


def test_usage_without_a_body_is_422(client, tenants):
    ws, headers = workspace(tenants)
    r = client.post("/entitlements/usage", headers=headers)
    assert r.status_code == 422 and r.json()["errors"] == {"body": ["A JSON object body is required."]}


def test_read_scope_cannot_record_usage(client, tenants):
    ws, headers = workspace(tenants, scopes=("entitlements:read",))
    assert client.get("/entitlements/summary", headers=headers).status_code == 200
    r = use(client, headers, "posts")
    assert r.status_code == 403 and r.json()["error"] == "access_denied"


# --- failing closed -----------------------------------------------------------------------


def test_redis_away_answers_503_and_never_grants(server_env, tenants, tmp_path):
    """A server whose Redis is a closed port: keys still authenticate (from Postgres), quota fails closed."""
    ws, headers = workspace(tenants, "pro")
    env = {**server_env, "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}
    with running_api(env, tmp_path) as url, httpx.Client(base_url=url + "/api/v1", timeout=10) as c:
        for r in (
            use(c, headers, "posts"),
            c.get("/entitlements/summary", headers=headers),
            c.get("/entitlements/check", params={"feature": "posts"}, headers=headers),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "service_unavailable" and "Redis" in r.json()["message"]
            assert r.headers["retry-after"]
    assert stored_usage(tenants, ws["id"], "posts") is None


def test_kafka_away_spools_the_usage_and_answers_200(server_env, tenants, tmp_path):
    """Kafka a closed port: the record is durable in the spool before the answer, so the usage counts."""
    ws, headers = workspace(tenants, "free")
    spool_dir = tmp_path / "spool"
    env = {**server_env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}", "SLUICE_SPOOL_DIR": str(spool_dir)}
    with running_api(env, tmp_path) as url, httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
        r = use(c, headers, "posts", 3, metadata={"post_id": 9})
        assert r.status_code == 200, r.text
        assert r.json()["current_usage"] == 3
        # Read while the server lives: on disk when answered, not only once it shuts down.
        held = [record for records in spooled_records(spool_dir).values() for record in records]
    usage_topic = Topics.with_prefix(server_env["SLUICE_KAFKA_TOPIC_PREFIX"]).usage
    usage = [record for record in held if record.topic == usage_topic]
    assert len(usage) == 1, f"usage records in the spool: {usage}"
    record = usage[0]
    assert record.key == workspace_key(ws["id"])
    event = orjson.loads(record.value)
    assert event.pop("event_id").startswith("use_")
    assert datetime.strptime(event.pop("occurred_at"), "%Y-%m-%d %H:%M:%S.%f")
    assert event == {
        "workspace_id": ws["id"],
        "feature": "posts",
        "quantity": 3,
        "metadata": '{"post_id":9}',
        "idempotency_key": "",
    }


def test_kafka_away_and_spool_full_answers_503_and_takes_the_usage_back(server_env, tenants, tmp_path, client):
    """Kafka a closed port and no room in the spool: the count is released in Redis and in Postgres."""
    ws, headers = workspace(tenants, "free")
    assert use(client, headers, "posts", 4).status_code == 200  # through the healthy server
    env = {
        **server_env,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}",
        "SLUICE_SPOOL_DIR": str(tmp_path / "spool"),
        "SLUICE_SPOOL_MAX_BYTES": "16",
    }
    with running_api(env, tmp_path) as url, httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
        for feature, quantity in (("posts", 3), ("posts", -2), ("api_calls", 5)):
            r = c.post(
                "/entitlements/usage",
                json={"feature": feature, "quantity": quantity, "event_id": "k1"},
                headers=headers,
            )
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "service_unavailable" and r.headers["retry-after"]
    summary = client.get("/entitlements/summary", headers=headers).json()["data"]["entitlements"]
    assert summary["posts"]["used"] == 4 and summary["api_calls"]["used"] == 0
    assert stored_usage(tenants, ws["id"], "posts") == 4
    # The event id was forgotten with the count: a retry once Kafka is back counts.
    assert use(client, headers, "posts", 3, event_id="k1").json() == {
        "recorded": True,
        "feature": "posts",
        "current_usage": 7,
        "limit": 10,
    }


def test_reaching_a_limit_emits_limit_reached_once_per_feature_and_month(client, tenants):
    ws, headers = workspace(tenants, "free")
    limit = use(client, headers, "posts", 1).json()["limit"]
    assert use(client, headers, "posts", limit - 1).status_code == 200
    for _ in range(3):
        assert use(client, headers, "posts", 1).status_code == 403
    rows = tenants.run(
        lambda pool: pool.fetch(
            "SELECT payload FROM outbox WHERE event_type = 'entitlement.limit_reached' AND workspace_id = $1", ws["id"]
        )
    )
    assert len(rows) == 1
    assert "posts" in str(rows[0]["payload"])
