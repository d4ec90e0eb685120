"""Webhooks over HTTP: endpoint CRUD in the spec's shapes, the test send (success, failure,
timeout), deliveries listed and retried by hand, secret rotation, all against a real local
HTTPS receiver whose CA this run trusts, named localhost (an endpoint's host is a name, never an
address); the allow-list admits 127.0.0.0/8, and so local names, for this module only."""

import ipaddress
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook

from ingest.webhooks import delivery
from ingest.webhooks.dispatcher import Dispatcher
from storage.config import WebhooksConfig
from tests.conftest import running_api
from tests.e2e.test_contract_integrations import conforms
from tests.integration.ingest.test_dispatcher import Clock
from tests.webhook_receiver import Answer

TEST_TIMEOUT_SECONDS = 1
# README: a failing delivery is attempted 8 times (after 0 s, 5 s, … 10 h), then left failed.
ATTEMPTS = 8


@pytest.fixture(scope="module")
def hooks_api(server_env, https_receiver, tmp_path_factory):
    env = {
        **server_env,
        "SLUICE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SLUICE_WEBHOOK_CA_BUNDLE": https_receiver.ca_path,
        "SLUICE_WEBHOOK_TIMEOUT_SECONDS": str(TEST_TIMEOUT_SECONDS),
    }
    with running_api(env, tmp_path_factory.mktemp("webhooks-api")) as url:
        with httpx.Client(base_url=url + "/api/v1", timeout=10) as client:
            yield client


@pytest.fixture(scope="module")
def document(hooks_api):
    return httpx.get(str(hooks_api.base_url).removesuffix("/api/v1/") + "/openapi.json").json()


@pytest.fixture
async def dispatch(pool, https_receiver):
    settings = WebhooksConfig(
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),), verify=https_receiver.ca_path, timeout_seconds=5
    )
    clock = Clock()
    async with delivery.create_client(settings) as client:
        yield Dispatcher(pool, settings, client, clock, random.Random(3)), clock


def path(name: str) -> str:
    return f"/{uuid.uuid4().hex[:12]}/{name}"


def create(client, headers, receiver, where, events=("api_key.created",), **extra) -> dict:
    url = receiver.url(where, host="localhost")
    r = client.post("/webhooks", json={"url": url, "events": list(events), **extra}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_returns_the_spec_shape_with_a_generated_secret_shown_once(hooks_api, tenant, https_receiver):
    _, headers = tenant
    body = create(hooks_api, headers, https_receiver, path("a"), events=["api_key.*", "workspace.updated"])
    assert body["message"] == "Webhook endpoint created successfully."
    data = body["data"]
    assert set(data) == {"id", "url", "events", "secret", "is_active", "created_at"}
    assert data["secret"].startswith("whsec_") and data["is_active"] is True
    got = hooks_api.get(f"/webhooks/{data['id']}", headers=headers).json()["data"]
    assert set(got) == {
        "id",
        "url",
        "events",
        "is_active",
        "success_count",
        "failure_count",
        "consecutive_failures",
        "last_delivery_at",
        "created_at",
    }
    assert (got["events"], got["success_count"], got["consecutive_failures"]) == (
        ["api_key.*", "workspace.updated"],
        0,
        0,
    )
    listed = hooks_api.get("/webhooks", headers=headers).json()
    assert [w["id"] for w in listed["data"]] == [data["id"]] and "secret" not in listed["data"][0]
    assert "consecutive_failures" not in listed["data"][0] and listed["meta"]["total"] == 1


def test_a_given_secret_is_kept(hooks_api, tenant, https_receiver):
    _, headers = tenant
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert create(hooks_api, headers, https_receiver, path("s"), secret=secret)["data"]["secret"] == secret


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, {"url", "events"}),
        ({"url": "http://example.com/hook", "events": ["*"]}, {"url"}),
        ({"url": "https://example.com/hook", "events": []}, {"events"}),
        ({"url": "https://example.com/hook", "events": ["post.created"]}, {"events"}),
        ({"url": "https://example.com/hook", "events": ["*"], "secret": "whsec_abc123def456..."}, {"secret"}),
        ({"url": "https://example.com/hook", "events": ["*"], "extra": 1}, {"extra"}),
        ({"url": "https://10.0.0.1/hook", "events": ["*"]}, {"url"}),
        ({"url": "https://93.184.216.34/hook", "events": ["*"]}, {"url"}),  # public, but an address
        ({"url": "https://169.254.169.254/latest", "events": ["*"]}, {"url"}),
        ({"url": "https://[::ffff:a9fe:a9fe]/", "events": ["*"]}, {"url"}),
        # Spellings a browser or resolver reads as a private address or a local name (the allow-list
        # here admits 127.0.0.0/8, so these are other ones).
        ({"url": "https://10.0.0.1./hook", "events": ["*"]}, {"url"}),
        ({"url": "https://169\uff0e254\uff0e169\uff0e254/latest", "events": ["*"]}, {"url"}),
        ({"url": "https://169\u3002254\u3002169\u3002254/latest", "events": ["*"]}, {"url"}),
        ({"url": "https://\u2460\u24ea.0.0.1/", "events": ["*"]}, {"url"}),
        ({"url": "https://%31%30.0.0.1/", "events": ["*"]}, {"url"}),
        # Not URLs at all, however they parse.
        ({"url": "https://[::1/x", "events": ["*"]}, {"url"}),
        ({"url": "https://[zzz]/x", "events": ["*"]}, {"url"}),
        ({"url": "https://example.com:99999/", "events": ["*"]}, {"url"}),
        ({"url": "https://exa\x00mple.com/", "events": ["*"]}, {"url"}),
    ],
)
def test_invalid_endpoints_are_refused_field_by_field(hooks_api, tenant, tenants, body, fields):
    ws, headers = tenant
    r = hooks_api.post("/webhooks", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert set(r.json()["errors"]) == fields
    assert tenants.fetchval("SELECT count(*) FROM webhook_endpoints WHERE workspace_id = $1", ws["id"]) == 0


def test_a_host_outside_the_ascii_grammar_is_refused_and_its_ascii_spelling_kept_as_given(hooks_api, tenant):
    _, headers = tenant
    wide = "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com./hook"  # ｅｘａｍｐｌｅ.com.
    r = hooks_api.post("/webhooks", json={"url": wide, "events": ["*"]}, headers=headers)
    assert r.status_code == 422 and set(r.json()["errors"]) == {"url"}, r.text
    url = "https://EXAMPLE.com./hook"
    r = hooks_api.post("/webhooks", json={"url": url, "events": ["*"]}, headers=headers)
    assert r.status_code == 201, r.text
    assert hooks_api.get(f"/webhooks/{r.json()['data']['id']}", headers=headers).json()["data"]["url"] == url


def test_wildcards_of_future_families_are_accepted(hooks_api, tenant, tenants):
    ws, headers = tenant
    events = ["post.*", "*", "seo.*"]
    r = hooks_api.post("/webhooks", json={"url": "https://example.com/h", "events": events}, headers=headers)
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    assert (created["url"], created["events"], created["is_active"]) == ("https://example.com/h", events, True)
    got = hooks_api.get(f"/webhooks/{created['id']}", headers=headers).json()["data"]
    assert got["events"] == events
    stored = tenants.fetchval(
        "SELECT events FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2", created["id"], ws["id"]
    )
    assert list(stored) == events


def test_update_and_delete(hooks_api, tenant, https_receiver):
    _, headers = tenant
    hook = create(hooks_api, headers, https_receiver, path("u"))["data"]
    r = hooks_api.patch(f"/webhooks/{hook['id']}", json={"events": ["seo.*"], "is_active": False}, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["events"], r.json()["data"]["is_active"]) == (["seo.*"], False)
    refused = hooks_api.patch(f"/webhooks/{hook['id']}", json={"is_active": "yes"}, headers=headers)
    assert refused.status_code == 422 and set(refused.json()["errors"]) == {"is_active"}, refused.text
    kept = hooks_api.get(f"/webhooks/{hook['id']}", headers=headers).json()["data"]
    assert (kept["events"], kept["is_active"]) == (["seo.*"], False)
    assert hooks_api.delete(f"/webhooks/{hook['id']}", headers=headers).status_code == 204
    gone = hooks_api.get(f"/webhooks/{hook['id']}", headers=headers)
    assert gone.status_code == 404 and gone.json()["error"] == "not_found", gone.text


def test_another_workspaces_endpoint_is_not_found_and_scopes_are_enforced(hooks_api, tenants, tenant, https_receiver):
    _, headers = tenant
    hook = create(hooks_api, headers, https_receiver, path("x"))["data"]
    other = tenants.workspace()
    stranger = {"Authorization": f"Bearer {tenants.key(other['id'])}"}
    hidden = hooks_api.get(f"/webhooks/{hook['id']}", headers=stranger)
    assert hidden.status_code == 404 and hidden.json()["error"] == "not_found" and hook["url"] not in hidden.text
    reader = {"Authorization": f"Bearer {tenants.key(other['id'], scopes=('webhooks:read',))}"}
    r = hooks_api.post("/webhooks", json={"url": "https://example.com/", "events": ["*"]}, headers=reader)
    assert r.status_code == 403, r.text
    assert tenants.fetchval("SELECT count(*) FROM webhook_endpoints WHERE workspace_id = $1", other["id"]) == 0
    assert hooks_api.delete(f"/webhooks/{hook['id']}", headers=reader).status_code == 403
    assert hooks_api.get(f"/webhooks/{hook['id']}", headers=headers).json()["data"]["id"] == hook["id"]


def test_test_send_reports_success_with_a_verifiable_signature(hooks_api, tenant, https_receiver, document):
    _, headers = tenant
    where = path("test-ok")
    hook = create(hooks_api, headers, https_receiver, where)["data"]
    r = hooks_api.post(f"/webhooks/{hook['id']}/test", headers=headers)
    body = conforms(document, "POST", "/api/v1/webhooks/{id}/test", r)
    assert set(body) == {"success", "status_code", "response_time_ms", "response_body"}
    assert (body["success"], body["status_code"], body["response_body"]) == (True, 200, '{"received": true}')
    [got] = https_receiver.at(where)
    event = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert event["type"] == "webhook.test" and event["data"]["webhook_id"] == hook["id"]


def test_test_send_reports_a_failing_status(hooks_api, tenant, https_receiver, document):
    _, headers = tenant
    where = path("test-500")
    https_receiver.script(where, Answer(500, body=b"x" * 10_000))
    hook = create(hooks_api, headers, https_receiver, where)["data"]
    r = hooks_api.post(f"/webhooks/{hook['id']}/test", headers=headers)
    body = conforms(document, "POST", "/api/v1/webhooks/{id}/test", r)
    assert (body["success"], body["status_code"], body["error"]) == (False, 500, "HTTP 500")


def test_test_send_reports_a_timeout_with_the_elapsed_time(hooks_api, tenant, https_receiver):
    _, headers = tenant
    where = path("test-slow")
    release = threading.Event()  # the receiver answers only once the API has answered us
    https_receiver.script(where, Answer(200, hold=release))
    hook = create(hooks_api, headers, https_receiver, where)["data"]
    try:
        started = time.monotonic()
        r = hooks_api.post(f"/webhooks/{hook['id']}/test", headers=headers, timeout=120)
        measured_ms = (time.monotonic() - started) * 1000
    finally:
        release.set()
    body = r.json()
    assert (body["success"], body["status_code"], body["error"]) == (False, None, "Connection timeout"), body
    assert len(https_receiver.at(where)) == 1  # it reached the receiver, which had not answered
    # The elapsed time reported: at least the timeout, at most what we measured around the request.
    assert TEST_TIMEOUT_SECONDS * 1000 <= body["response_time_ms"] <= measured_ms, (body, measured_ms)


async def test_an_api_change_is_delivered_listed_and_retried_by_hand(
    hooks_api, tenant, https_receiver, dispatch, document
):
    dispatcher, clock = dispatch
    _, headers = tenant
    where = path("manual")
    https_receiver.script(where, Answer(500))
    hook = create(hooks_api, headers, https_receiver, where)["data"]
    assert hooks_api.post("/api-keys", json={"name": "deploy"}, headers=headers).status_code == 201
    await dispatcher.run_once()
    r = hooks_api.get(f"/webhooks/{hook['id']}/deliveries?status=retrying", headers=headers)
    listed = conforms(document, "GET", "/api/v1/webhooks/{id}/deliveries", r)["data"]
    assert [(d["status"], d["attempt"], d["response_code"]) for d in listed] == [("retrying", 1, 500)]
    assert listed[0]["next_retry_at"] and listed[0]["event_id"].startswith("evt_")
    for _ in range(ATTEMPTS - 1):  # let the automatic retries run out
        clock.at(clock.now + timedelta(hours=12))
        await dispatcher.run_once()
    [failed] = hooks_api.get(f"/webhooks/{hook['id']}/deliveries?status=failed", headers=headers).json()["data"]
    assert failed["attempt"] == ATTEMPTS and "next_retry_at" not in failed
    https_receiver.script(where, Answer(200))
    r = hooks_api.post(f"/webhooks/{hook['id']}/deliveries/{failed['id']}/retry", headers=headers)
    assert conforms(document, "POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", r) == {
        "message": "Delivery queued for retry.",
        "data": {"id": failed["id"], "status": "pending", "attempt": ATTEMPTS + 1},
    }
    clock.at(datetime.now(UTC))  # back to real time, which the verifier checks the signature's against
    await dispatcher.run_once()
    r = hooks_api.get(f"/webhooks/{hook['id']}/deliveries", headers=headers)
    [done] = conforms(document, "GET", "/api/v1/webhooks/{id}/deliveries", r)["data"]
    assert (done["status"], done["attempt"], done["response_code"]) == ("success", ATTEMPTS + 1, 200)
    assert done["delivered_at"]
    event = Webhook(hook["secret"]).verify(https_receiver.at(where)[-1].body, https_receiver.at(where)[-1].headers)
    assert event["id"] == done["event_id"] and event["data"]["name"] == "deploy"
    again = hooks_api.post(f"/webhooks/{hook['id']}/deliveries/{failed['id']}/retry", headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "cannot_retry"
    health = hooks_api.get(f"/webhooks/{hook['id']}", headers=headers).json()["data"]
    assert (health["success_count"], health["failure_count"], health["consecutive_failures"]) == (1, ATTEMPTS, 0)


async def test_rotating_the_secret_signs_with_both_during_the_grace_period(hooks_api, tenant, https_receiver, dispatch):
    dispatcher, _ = dispatch
    ws, headers = tenant
    where = path("rotate")
    hook = create(hooks_api, headers, https_receiver, where, events=["workspace.updated"])["data"]
    r = hooks_api.post(f"/webhooks/{hook['id']}/rotate-secret", json={"grace_period_hours": 2}, headers=headers)
    assert r.status_code == 200, r.text
    rotated = r.json()["data"]
    assert rotated["secret"] != hook["secret"] and rotated["previous_secret_expires_at"]
    assert hooks_api.patch(f"/workspaces/{ws['id']}", json={"name": "Renamed"}, headers=headers).status_code == 200
    await dispatcher.run_once()
    [got] = https_receiver.at(where)
    for secret in (hook["secret"], rotated["secret"]):
        event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "workspace.updated" and event["data"]["name"] == "Renamed"


async def test_deleting_an_endpoint_cancels_its_pending_deliveries(hooks_api, tenant, https_receiver, dispatch, pool):
    dispatcher, _ = dispatch
    _, headers = tenant
    where = path("deleted")
    hook = create(hooks_api, headers, https_receiver, where)["data"]
    assert hooks_api.post("/api-keys", json={"name": "x"}, headers=headers).status_code == 201
    await dispatcher.fan_out()
    assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", hook["id"]) == 1
    assert hooks_api.delete(f"/webhooks/{hook['id']}", headers=headers).status_code == 204
    await dispatcher.run_once()
    assert https_receiver.at(where) == []
    assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", hook["id"]) == 0


def test_listing_deliveries_refuses_an_unknown_status(hooks_api, tenant, https_receiver):
    _, headers = tenant
    hook = create(hooks_api, headers, https_receiver, path("l"))["data"]
    r = hooks_api.get(f"/webhooks/{hook['id']}/deliveries?status=lost", headers=headers)
    assert r.status_code == 422 and "status" in r.json()["errors"]
