"""No caller obtains more than it holds, over HTTP against the real server.

Two tables. WRITE_ROUTES has a row for every write route of the API (derived from the route
tables, so a new write route without a row fails `test_every_write_route_has_a_row`): a key
holding every scope but the route's is refused with the envelope and nothing changes.
ESCALATIONS holds what a key that does hold the route's scope might still try: rotate or revoke
a broader key, change its plan, create a workspace or key above its plan, outlive itself, and
subscribe or reach data it may not read. Then the allowed cases next to them, and the operator's
`set-tier`.
"""

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.access.scopes import ALL_SCOPES
from app.main import api_routes
from tests.conftest import ROOT

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
ROUTES = {(r.method, r.path): r for r in api_routes()}
CLI_TIMEOUT = 60
# X-RateLimit-Limit is the bucket's capacity: the tier's rate plus its burst.
TIER_LIMITS = {"free": "60", "starter": "1200", "pro": "6500", "agency": "30000", "enterprise": "200000"}
# How long the tests' server may keep a workspace row (SLUICE_WORKSPACE_CACHE_SECONDS, left at its
# default): a change shown sooner than this after the row was read was announced, not expired.
WORKSPACE_CACHE_SECONDS = 30


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def later(**delta) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


@dataclass
class World:
    """A fresh account and workspace, an all-scopes key, and the ids a row's setup made."""

    client: httpx.Client
    tenants: object
    ws: dict
    admin: dict
    ids: dict = field(default_factory=dict)

    def key(self, scopes, **options) -> dict:
        return bearer(self.tenants.key(self.ws["id"], scopes=list(scopes), **options))

    def key_id(self, scopes, **options) -> tuple[dict, int]:
        headers = self.key(scopes, **options)
        return headers, self.tenants.fetchval("SELECT max(id) FROM api_keys WHERE workspace_id = $1", self.ws["id"])

    def get(self, path: str, **params):
        r = self.client.get(path, headers=self.admin, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: dict) -> dict:
        r = self.client.post(path, json=body, headers=self.admin)
        assert r.status_code in (200, 201), r.text
        return r.json()["data"]


@pytest.fixture
def world(client, tenants):
    def make(tier: str = "pro") -> World:
        ws = tenants.workspace(tier=tier)
        return World(client, tenants, ws, bearer(tenants.key(ws["id"])), {"workspace": ws["id"]})

    return make


# --- setups: what a row acts on, made by the all-scopes key -----------------------------------


def nothing(w: World) -> None:
    pass


def sibling_workspace(w: World) -> None:
    w.ids["workspace"] = w.post("/workspaces", {"name": "Sibling"})["id"]


def target_key(w: World) -> None:
    w.ids["key"] = w.post("/api-keys", {"name": "Target", "scopes": ["workspaces:read"]})["id"]


def star_key(w: World) -> None:
    w.ids["key"] = w.key_id(["*"])[1]


def lasting_key(w: World) -> None:
    w.ids["key"] = w.post("/api-keys", {"name": "Lasting", "scopes": ["workspaces:read"]})["id"]


def later_key(w: World) -> None:
    body = {"name": "Later", "scopes": ["workspaces:read"], "expires_at": later(days=10).isoformat()}
    w.ids["key"] = w.post("/api-keys", body)["id"]


def domain(w: World) -> None:
    w.ids["domain"] = w.post("/pixel/domains", {"host": f"{uuid.uuid4().hex[:12]}.example"})["id"]


def webhook(w: World, events=("*",)) -> None:
    w.ids["webhook"] = w.post("/webhooks", {"url": "https://example.com/hooks", "events": list(events)})["id"]


def key_webhook(w: World) -> None:
    webhook(w, events=("api_key.*",))


def failed_delivery(w: World) -> None:
    webhook(w)
    w.ids["delivery"] = w.tenants.fetchval(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, status, attempt) "
        "VALUES ($1, 'evt_privileges', 'api_key.created', '{}', 'failed', 8) RETURNING id",
        w.ids["webhook"],
    )


# --- observations: the state a refused request must leave as it was ---------------------------


def workspaces_state(w: World):
    return w.get("/workspaces", fields="id,name,slug,tier,settings,updated_at", per_page=100)["data"]


def keys_state(w: World):
    return w.get("/api-keys", fields="id,name,scopes,rate_limit_tier,status,expires_at", per_page=100)["data"]


def usage_state(w: World):
    return {k: v["used"] for k, v in w.get("/entitlements/summary")["data"]["entitlements"].items()}


def seo_state(w: World):
    return w.get("/seo/reports")["data"]


def files_state(w: World):
    body = {"server": "filesystem", "tool": "list_directory", "arguments": {}}
    r = w.client.post("/mcp/tools/call", json=body, headers=w.admin)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def mcp_calls_state(w: World):
    return w.tenants.fetchval("SELECT count(*) FROM mcp_tool_calls WHERE workspace_id = $1", w.ws["id"])


def domains_state(w: World):
    return w.get("/pixel/domains")["data"]


def webhooks_state(w: World):
    state = {"list": w.get("/webhooks")["data"]}
    if "webhook" in w.ids:
        wid = w.ids["webhook"]
        state["detail"] = w.get(f"/webhooks/{wid}")["data"]
        state["deliveries"] = w.get(f"/webhooks/{wid}/deliveries")["data"]
        state["secret"] = w.tenants.fetchval(
            "SELECT secret || coalesce(previous_secret, '') FROM webhook_endpoints WHERE id = $1", wid
        )
    return state


# --- every write route, refused to a key without its scope ------------------------------------


@dataclass(frozen=True)
class Row:
    observe: Callable[[World], object]
    setup: Callable[[World], None] = nothing
    body: dict | None = None
    fill: dict = field(default_factory=dict)  # path parameter → key of World.ids


SEO_REPORT = {
    "url": "https://example.com/",
    "scores": {"performance": 1, "accessibility": 2, "best_practices": 3, "seo": 4},
}
WRITE_ROUTES = {
    ("POST", "/api/v1/workspaces"): Row(workspaces_state, body={"name": "Sneaky"}),
    ("PATCH", "/api/v1/workspaces/{id}"): Row(
        workspaces_state, sibling_workspace, {"name": "Renamed"}, {"id": "workspace"}
    ),
    ("DELETE", "/api/v1/workspaces/{id}"): Row(workspaces_state, sibling_workspace, fill={"id": "workspace"}),
    ("POST", "/api/v1/api-keys"): Row(keys_state, body={"name": "Sneaky", "scopes": ["workspaces:read"]}),
    ("POST", "/api/v1/api-keys/{id}/rotate"): Row(keys_state, target_key, {"grace_period_hours": 0}, {"id": "key"}),
    ("DELETE", "/api/v1/api-keys/{id}"): Row(keys_state, target_key, fill={"id": "key"}),
    ("POST", "/api/v1/entitlements/usage"): Row(usage_state, body={"feature": "posts", "quantity": 1}),
    ("POST", "/api/v1/seo/report"): Row(seo_state, body=SEO_REPORT),
    ("POST", "/api/v1/mcp/tools/call"): Row(
        files_state,
        body={"server": "filesystem", "tool": "write_file", "arguments": {"path": "sneaky.txt", "content": "x"}},
    ),
    ("POST", "/api/v1/pixel/domains"): Row(domains_state, body={"host": "sneaky.example"}),
    ("PATCH", "/api/v1/pixel/domains/{id}"): Row(domains_state, domain, {"enabled": False}, {"id": "domain"}),
    ("DELETE", "/api/v1/pixel/domains/{id}"): Row(domains_state, domain, fill={"id": "domain"}),
    ("POST", "/api/v1/pixel/domains/{id}/verify"): Row(domains_state, domain, fill={"id": "domain"}),
    # A read by POST (scope stats:read), refused like the writes; it changes nothing either way.
    ("POST", "/api/v1/stats/query"): Row(
        domains_state, domain, {"site": "sneaky.example", "metrics": ["visitors"], "date_range": "7d"}
    ),
    ("POST", "/api/v1/webhooks"): Row(webhooks_state, body={"url": "https://example.com/sneaky", "events": ["seo.*"]}),
    ("PATCH", "/api/v1/webhooks/{id}"): Row(webhooks_state, webhook, {"is_active": False}, {"id": "webhook"}),
    ("DELETE", "/api/v1/webhooks/{id}"): Row(webhooks_state, webhook, fill={"id": "webhook"}),
    ("POST", "/api/v1/webhooks/{id}/test"): Row(webhooks_state, webhook, fill={"id": "webhook"}),
    ("POST", "/api/v1/webhooks/{id}/rotate-secret"): Row(
        webhooks_state, webhook, {"grace_period_hours": 0}, {"id": "webhook"}
    ),
    ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): Row(
        webhooks_state, failed_delivery, fill={"webhook_id": "webhook", "delivery_id": "delivery"}
    ),
}


def test_every_write_route_has_a_row():
    """A new write route needs a row here (what it changes and how to see that it did not)."""
    write_routes = {key for key, route in ROUTES.items() if route.method in WRITE_METHODS and route.scope}
    assert sorted(write_routes - set(WRITE_ROUTES)) == [], "write routes without a row in WRITE_ROUTES"
    assert sorted(set(WRITE_ROUTES) - write_routes) == [], "rows of WRITE_ROUTES that are no longer routes"


@pytest.mark.parametrize("method, path", sorted(WRITE_ROUTES), ids=lambda v: v)
def test_write_route_refuses_a_key_without_its_scope_and_changes_nothing(world, method, path):
    route, row = ROUTES[(method, path)], WRITE_ROUTES[(method, path)]
    w = world()
    row.setup(w)
    lacking = w.key([s for s in ALL_SCOPES if s != route.scope])
    before = row.observe(w)
    url = path.removeprefix("/api/v1").format(**{name: w.ids[key] for name, key in row.fill.items()})
    r = w.client.request(method, url, json=row.body, headers=lacking)
    assert r.status_code == 403, r.text
    assert r.json() == {"error": "access_denied", "message": f"Insufficient permissions. Required scope: {route.scope}"}
    assert row.observe(w) == before


# --- what a key holding the route's scope may still not do ------------------------------------


@dataclass(frozen=True)
class Escalation:
    method: str
    path: str  # {name} filled from World.ids
    caller: Callable[[World], dict]
    observe: Callable[[World], object]
    setup: Callable[[World], None] = nothing
    body: dict | None = None
    tier: str = "pro"
    status: int = 403
    says: str = ""  # in the message (403) or in the field's errors (422)
    field: str | None = None  # the field named by a 422


def scoped(*scopes: str, **options) -> Callable[[World], dict]:
    return lambda w: w.key(scopes, **options)


def expiring(*scopes: str) -> Callable[[World], dict]:
    return scoped(*scopes, expires_at=later(days=1))


KEYS_RW = ("api-keys:read", "api-keys:write")
ESCALATIONS = {
    "rotate a key with broader scopes": Escalation(
        "POST",
        "/api-keys/{key}/rotate",
        scoped(*KEYS_RW),
        keys_state,
        star_key,
        {"grace_period_hours": 0},
        says="cannot rotate key {key}, whose scopes include '*' which it does not hold",
    ),
    "revoke a key with broader scopes": Escalation(
        "DELETE",
        "/api-keys/{key}",
        scoped("api-keys:read", "api-keys:delete"),
        keys_state,
        star_key,
        says="cannot revoke key {key}, whose scopes include '*' which it does not hold",
    ),
    "rotate a key that never expires from an expiring key": Escalation(
        "POST",
        "/api-keys/{key}/rotate",
        expiring("*"),
        keys_state,
        lasting_key,
        {"grace_period_hours": 0},
        says="cannot rotate key {key}, which never expires",
    ),
    "revoke a key that never expires from an expiring key": Escalation(
        "DELETE",
        "/api-keys/{key}",
        expiring("*"),
        keys_state,
        lasting_key,
        says="cannot revoke key {key}, which never expires",
    ),
    "rotate a key that expires after the caller": Escalation(
        "POST", "/api-keys/{key}/rotate", expiring("*"), keys_state, later_key, says="after this key"
    ),
    "change the workspace's tier": Escalation(
        "PATCH",
        "/workspaces/{workspace}",
        scoped("workspaces:read", "workspaces:write"),
        workspaces_state,
        body={"name": "Upgraded", "tier": "enterprise"},
        tier="free",
        says="changes only through the operator: python -m app set-tier",
    ),
    "create a workspace above its own tier": Escalation(
        "POST",
        "/workspaces",
        scoped("workspaces:write"),
        workspaces_state,
        body={"name": "Bigger", "tier": "pro"},
        tier="starter",
        says="on the 'starter' tier; it cannot create a workspace on the higher 'pro' tier",
    ),
    "create a key above the workspace's tier": Escalation(
        "POST",
        "/api-keys",
        scoped(*KEYS_RW, "workspaces:read"),
        keys_state,
        body={"name": "x", "scopes": ["workspaces:read"], "rate_limit_tier": "enterprise"},
        tier="free",
        status=422,
        field="rate_limit_tier",
        says="may not be above the workspace's tier, 'free'",
    ),
    "create a key that never expires from an expiring key": Escalation(
        "POST",
        "/api-keys",
        expiring(*KEYS_RW),
        keys_state,
        body={"name": "Forever"},
        status=422,
        field="expires_at",
        says="so the keys it creates must expire too",
    ),
    "create a key with expires_at null from an expiring key": Escalation(
        "POST",
        "/api-keys",
        expiring(*KEYS_RW),
        keys_state,
        body={"name": "Forever", "expires_at": None},
        status=422,
        field="expires_at",
        says="so the keys it creates must expire too",
    ),
    "create a key that expires after the caller": Escalation(
        "POST",
        "/api-keys",
        expiring(*KEYS_RW),
        keys_state,
        body={"name": "Longer", "expires_at": later(days=30).isoformat()},
        status=422,
        field="expires_at",
        says="may not be later than this API key's own expiry",
    ),
    "subscribe a webhook to events it may not read": Escalation(
        "POST",
        "/webhooks",
        scoped("webhooks:read", "webhooks:write"),
        webhooks_state,
        body={"url": "https://example.com/mine", "events": ["*"]},
        status=422,
        field="events",
        says="needs scope api-keys:read, which it does not hold",
    ),
    "point a webhook whose events it may not read elsewhere": Escalation(
        "PATCH",
        "/webhooks/{webhook}",
        scoped("webhooks:read", "webhooks:write"),
        webhooks_state,
        key_webhook,
        {"url": "https://attacker.example/hooks"},
        says="cannot change the url of webhook endpoint {webhook}",
    ),
    "take the signing secret of a webhook whose events it may not read": Escalation(
        "POST",
        "/webhooks/{webhook}/rotate-secret",
        scoped("webhooks:read", "webhooks:write"),
        webhooks_state,
        key_webhook,
        says="cannot rotate the secret of webhook endpoint {webhook}",
    ),
    "read files through an MCP tool with mcp:write alone": Escalation(
        "POST",
        "/mcp/tools/call",
        scoped("mcp:write"),
        mcp_calls_state,
        body={"server": "filesystem", "tool": "read_file", "arguments": {"path": "notes.txt"}},
        says="also requires scope: mcp:read",
    ),
}


@pytest.mark.parametrize("name", list(ESCALATIONS))
def test_escalation_is_refused_and_changes_nothing(world, name):
    case = ESCALATIONS[name]
    w = world(case.tier)
    case.setup(w)
    caller = case.caller(w)
    before = case.observe(w)
    r = w.client.request(case.method, case.path.format(**w.ids), json=case.body, headers=caller)
    assert r.status_code == case.status, r.text
    body = r.json()
    says = case.says.format(**w.ids)
    if case.status == 403:
        assert body["error"] == "access_denied" and says in body["message"], body
    else:
        assert body["error"] == "validation_failed" and list(body["errors"]) == [case.field], body
        assert any(says in message for message in body["errors"][case.field]), body
    assert case.observe(w) == before


# --- and what stays allowed --------------------------------------------------------------------


def test_a_key_rotates_and_revokes_itself_and_keys_within_its_scopes(world):
    w = world()
    narrow, narrow_id = w.key_id(KEYS_RW + ("api-keys:delete", "workspaces:read"))
    target_key(w)  # workspaces:read: within what the narrow key could grant
    r = w.client.post(f"/api-keys/{w.ids['key']}/rotate", json={"grace_period_hours": 0}, headers=narrow)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["scopes"] == ["workspaces:read"]
    assert w.client.delete(f"/api-keys/{r.json()['data']['id']}", headers=narrow).status_code == 204
    r = w.client.post(f"/api-keys/{narrow_id}/rotate", json={"grace_period_hours": 1}, headers=narrow)
    assert r.status_code == 200, r.text
    successor = r.json()["data"]
    assert set(successor["scopes"]) == {*KEYS_RW, "api-keys:delete", "workspaces:read"}
    assert w.client.delete(f"/api-keys/{narrow_id}", headers=narrow).status_code == 204
    assert w.client.get("/api-keys", headers=narrow).status_code == 401
    assert w.client.get("/api-keys", headers=bearer(successor["key"])).status_code == 200


def test_an_expiring_key_hands_out_only_keys_that_expire_no_later(world):
    w = world()
    ends = later(days=2)
    caller = w.key(KEYS_RW + ("workspaces:read",), expires_at=ends)
    body = {"name": "Shorter", "scopes": ["workspaces:read"], "expires_at": later(days=1).isoformat()}
    r = w.client.post("/api-keys", json=body, headers=caller)
    assert r.status_code == 201, r.text
    rotated = w.client.post(
        f"/api-keys/{r.json()['data']['id']}/rotate", json={"grace_period_hours": 0}, headers=caller
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["data"]["expires_at"] == r.json()["data"]["expires_at"]  # the successor's too
    at_end = w.client.post("/api-keys", json={"name": "Same", "expires_at": ends.isoformat()}, headers=caller)
    assert at_end.status_code == 201, at_end.text


def test_a_key_may_ask_for_a_tier_up_to_its_workspace_s(world):
    w = world("pro")
    for tier in ("free", "pro"):
        r = w.client.post("/api-keys", json={"name": tier, "rate_limit_tier": tier}, headers=w.admin)
        assert r.status_code == 201, r.text
        assert (
            w.client.get("/workspaces", headers=bearer(r.json()["data"]["key"])).headers["x-ratelimit-limit"]
            == TIER_LIMITS[tier]
        )


def test_patch_with_the_current_tier_is_a_no_op_and_create_up_to_the_own_tier_is_allowed(world):
    w = world("pro")
    r = w.client.patch(f"/workspaces/{w.ws['id']}", json={"name": "Same plan", "tier": "pro"}, headers=w.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["name"], r.json()["data"]["tier"]) == ("Same plan", "pro")
    for tier in ("pro", "starter"):
        r = w.client.post("/workspaces", json={"name": tier, "tier": tier}, headers=w.admin)
        assert r.status_code == 201 and r.json()["data"]["tier"] == tier, r.text


def test_own_workspace_tier_decides_not_the_key_s_rate_tier(world):
    """The plan that bounds a new workspace is the caller's workspace's, not its key's rate tier."""
    w = world("agency")
    slow = w.key(["workspaces:write"], tier="free")
    r = w.client.post("/workspaces", json={"name": "Agency too", "tier": "agency"}, headers=slow)
    assert r.status_code == 201, r.text


def test_a_key_s_tier_above_its_workspace_s_is_capped_at_authentication(client, tenants):
    ws = tenants.workspace(tier="pro")
    r = client.get("/workspaces", headers=bearer(tenants.key(ws["id"], tier="enterprise")))
    assert r.headers["x-ratelimit-limit"] == "6500" and r.headers["ratelimit-policy"] == '"pro";q=6500;w=78'


def test_webhook_subscriptions_within_the_key_s_read_scopes_are_allowed(world):
    w = world()
    caller = w.key(["webhooks:read", "webhooks:write", "seo:read"])
    r = w.client.post(
        "/webhooks", json={"url": "https://example.com/seo", "events": ["seo.*", "webhook.*"]}, headers=caller
    )
    assert r.status_code == 201, r.text
    endpoint = r.json()["data"]["id"]
    r = w.client.patch(f"/webhooks/{endpoint}", json={"url": "https://example.com/moved"}, headers=caller)
    assert r.status_code == 200 and r.json()["data"]["url"] == "https://example.com/moved"
    key_webhook(w)
    # Pausing it leaks nothing; narrowing its events to readable ones makes it the caller's to move.
    r = w.client.patch(f"/webhooks/{w.ids['webhook']}", json={"is_active": False}, headers=caller)
    assert r.status_code == 200 and r.json()["data"]["is_active"] is False, r.text
    r = w.client.patch(f"/webhooks/{w.ids['webhook']}", json={"events": ["seo.report.created"]}, headers=caller)
    assert r.status_code == 200 and r.json()["data"]["events"] == ["seo.report.created"], r.text
    r = w.client.post(f"/webhooks/{w.ids['webhook']}/rotate-secret", json={}, headers=caller)
    assert r.status_code == 200, r.text


# --- the operator changes tiers ------------------------------------------------------------------


def set_tier(env: dict, workspace_id: int, tier: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", "set-tier", "--workspace-id", str(workspace_id), "--tier", tier],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def tier_shown(client: httpx.Client, workspace_id: int, headers: dict) -> str:
    return client.get(f"/workspaces/{workspace_id}", headers=headers).json()["data"]["tier"]


def wait_until_announced(condition: Callable[[], bool], read_at: float, what: str) -> None:
    """Until condition() holds, asked before a row cached at `read_at` (monotonic, taken before the
    read that cached it) could have expired: only the change's announcement drops it sooner."""
    while not ((asked := time.monotonic()) - read_at >= WORKSPACE_CACHE_SECONDS or condition()):
        time.sleep(0.05)
    assert asked - read_at < WORKSPACE_CACHE_SECONDS, (
        f"{what} not seen within {WORKSPACE_CACHE_SECONDS} s of the read that cached the row: "
        "the change's announcement did not drop it"
    )


def test_set_tier_upgrades_a_workspace_and_its_keys_limits_at_once(client, tenants, server_env):
    ws = tenants.workspace(tier="free")
    headers = bearer(tenants.key(ws["id"]))
    read_at = time.monotonic()
    assert client.get(f"/workspaces/{ws['id']}", headers=headers).headers["x-ratelimit-limit"] == "60"  # cached
    done = set_tier(server_env, ws["id"], "pro")
    assert done.returncode == 0, done.stderr
    assert f"workspace {ws['id']} 'Test Workspace' is now on tier pro" in done.stdout
    assert client.get("/workspaces", headers=headers).headers["x-ratelimit-limit"] == "6500"
    wait_until_announced(lambda: tier_shown(client, ws["id"], headers) == "pro", read_at, "the new tier")
    assert tenants.fetchval("SELECT tier FROM workspaces WHERE id = $1", ws["id"]) == "pro"
    events = tenants.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'workspace.updated' "
        "AND workspace_id = $1 AND payload->>'tier' = 'pro'",
        ws["id"],
    )
    assert events == 1


def test_set_tier_downgrade_caps_a_faster_key_at_once(client, tenants, server_env):
    ws = tenants.workspace(tier="enterprise")
    headers = bearer(tenants.key(ws["id"], tier="enterprise"))
    assert client.get("/workspaces", headers=headers).headers["x-ratelimit-limit"] == "200000"
    done = set_tier(server_env, ws["id"], "starter")
    assert done.returncode == 0, done.stderr
    r = client.get("/workspaces", headers=headers)
    assert r.headers["x-ratelimit-limit"] == "1200" and r.headers["ratelimit-policy"] == '"starter";q=1200;w=72'
    # The key keeps the tier it was given: an upgrade back restores it.
    assert set_tier(server_env, ws["id"], "enterprise").returncode == 0
    assert client.get("/workspaces", headers=headers).headers["x-ratelimit-limit"] == "200000"


def test_rotating_a_key_above_a_lowered_plan_gives_a_successor_within_it(client, tenants, server_env):
    ws = tenants.workspace(tier="enterprise")
    admin = bearer(tenants.key(ws["id"]))
    read_at = time.monotonic()  # before any request of this test could cache the row
    fast = client.post("/api-keys", json={"name": "Fast", "rate_limit_tier": "agency"}, headers=admin).json()["data"]
    assert set_tier(server_env, ws["id"], "pro").returncode == 0
    wait_until_announced(lambda: tier_shown(client, ws["id"], admin) == "pro", read_at, "the lowered tier")
    r = client.post(f"/api-keys/{fast['id']}/rotate", json={"grace_period_hours": 0}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["rate_limit_tier"] == "pro"


def test_set_tier_of_a_missing_workspace_fails_clearly(server_env):
    done = set_tier(server_env, 999_999_999_999_999, "pro")
    assert done.returncode != 0 and "not found: workspace 999999999999999" in done.stderr
