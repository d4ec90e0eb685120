"""API keys over HTTP: shown once, stored hashed, rotated with grace, revoked at once."""

import hashlib
import time
from datetime import UTC, datetime, timedelta

# A key made to expire this far ahead is used at once (accepted) and then until it is refused.
KEY_LIFETIME_SECONDS = 3
# How long a change (an expiry, a batched write) may take to show on a loaded machine.
DEADLINE_SECONDS = 60
VALIDATION_MESSAGE = "The given data was invalid."


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def keys_named(tenants, workspace_id: int, name: str) -> int:
    return tenants.fetchval("SELECT count(*) FROM api_keys WHERE workspace_id = $1 AND name = $2", workspace_id, name)


def key_row(tenants, key_id: int) -> dict:
    row = tenants.run(
        lambda pool: pool.fetchrow("SELECT revoked_at, rotated_to_id, updated_at FROM api_keys WHERE id = $1", key_id)
    )
    return dict(row)


def test_created_key_is_returned_once_and_works(client, tenant):
    _, headers = tenant
    r = client.post("/api-keys", json={"name": "Mobile", "scopes": ["workspaces:read"]}, headers=headers)
    assert r.status_code == 201
    data = r.json()["data"]
    assert data["key"].startswith("sk_live_") and data["prefix"] == data["key"][:12]
    got = client.get(f"/api-keys/{data['id']}", headers=headers).json()["data"]
    assert "key" not in got and "key_hash" not in got
    assert got["scopes"] == ["workspaces:read"]
    assert client.get("/workspaces", headers=bearer(data["key"])).status_code == 200


def test_key_is_stored_only_as_sha256(client, tenant, tenants):
    _, headers = tenant
    data = client.post("/api-keys", json={"name": "Hashed"}, headers=headers).json()["data"]
    stored = tenants.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", data["id"])
    assert bytes(stored) == hashlib.sha256(data["key"].encode()).digest()
    leaked = tenants.fetchval("SELECT count(*) FROM api_keys WHERE prefix = $1 OR name = $1", data["key"])
    assert leaked == 0


def test_default_scopes_are_read_and_write(client, tenant):
    _, headers = tenant
    scopes = client.post("/api-keys", json={"name": "Default"}, headers=headers).json()["data"]["scopes"]
    assert "workspaces:read" in scopes and "api-keys:write" in scopes
    assert not any(s.endswith(":delete") for s in scopes)


def test_key_cannot_grant_scopes_it_lacks(client, tenants):
    ws = tenants.workspace()
    narrow = tenants.key(ws["id"], scopes=["api-keys:write", "workspaces:read"])
    for scope in ("workspaces:delete", "*"):
        r = client.post("/api-keys", json={"name": "Escalate", "scopes": [scope]}, headers=bearer(narrow))
        assert r.status_code == 422, r.text
        assert r.json() == {
            "error": "validation_failed",
            "message": VALIDATION_MESSAGE,
            "errors": {"scopes": [f"This API key cannot grant {scope!r}, which it does not hold itself."]},
        }
    assert keys_named(tenants, ws["id"], "Escalate") == 0


def test_invalid_key_request_returns_422_per_field(client, tenant, tenants):
    ws, headers = tenant
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = client.post(
        "/api-keys", json={"scopes": ["posts:fly"], "rate_limit_tier": "gold", "expires_at": past}, headers=headers
    )
    assert r.status_code == 422
    assert r.json()["error"] == "validation_failed" and r.json()["message"] == VALIDATION_MESSAGE
    assert set(r.json()["errors"]) == {"name", "scopes", "rate_limit_tier", "expires_at"}
    assert all(messages and all(isinstance(m, str) for m in messages) for messages in r.json()["errors"].values())
    stored = tenants.fetchval("SELECT count(*) FROM api_keys WHERE workspace_id = $1", ws["id"])
    assert stored == 1  # only the key the request was made with


def test_key_works_until_it_expires_and_is_refused_from_then_on(client, tenants):
    """Used until refused. The server compares expires_at with this machine's clock, read after
    the request was sent and before it was answered: so each acceptance must have been sent
    before the expiry, and the refusal answered after it."""
    ws = tenants.workspace()
    expires = time.time() + KEY_LIFETIME_SECONDS
    key = tenants.key(ws["id"], expires_at=datetime.fromtimestamp(expires, UTC))
    accepted, deadline = 0, time.monotonic() + DEADLINE_SECONDS
    while True:
        sent = time.time()
        r = client.get("/api-keys", headers=bearer(key))
        answered = time.time()
        if r.status_code != 200:
            break
        accepted += 1
        assert sent < expires, f"accepted a request sent {sent - expires:.3f} s after the key expired"
        assert time.monotonic() < deadline, f"still accepted {DEADLINE_SECONDS} s after it was made"
        time.sleep(0.1)
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "unauthorized", "message": "API key expired or revoked."}
    assert answered >= expires, f"refused {expires - answered:.3f} s before the key expired ({accepted} accepted)"


def test_revoke_takes_effect_at_once(client, tenant):
    _, headers = tenant
    data = client.post("/api-keys", json={"name": "Short-lived"}, headers=headers).json()["data"]
    assert client.get("/workspaces", headers=bearer(data["key"])).status_code == 200
    assert client.delete(f"/api-keys/{data['id']}", headers=headers).status_code == 204
    assert client.get("/workspaces", headers=bearer(data["key"])).status_code == 401
    assert client.get(f"/api-keys/{data['id']}", headers=headers).json()["data"]["status"] == "revoked"
    missing = client.delete("/api-keys/999999999", headers=headers)
    assert missing.status_code == 404 and missing.json() == {"error": "not_found", "message": "Resource not found."}


def assert_grace_ends_24_hours_after(new: dict, sent: datetime, answered: datetime) -> None:
    """The grace period runs from the rotation, which happened between `sent` and `answered`
    (Postgres' now() on this machine's clock; the answer shows whole seconds)."""
    ends = datetime.fromisoformat(new["grace_period_ends_at"].replace("Z", "+00:00"))
    earliest, latest = sent.replace(microsecond=0), answered
    assert earliest + timedelta(hours=24) <= ends <= latest + timedelta(hours=24), (sent, ends, answered)


def test_rotation_keeps_old_key_for_grace_period(client, tenant):
    _, headers = tenant
    old = client.post("/api-keys", json={"name": "Rotating", "scopes": ["workspaces:read"]}, headers=headers).json()[
        "data"
    ]
    sent = datetime.now(UTC)
    r = client.post(f"/api-keys/{old['id']}/rotate", json={"grace_period_hours": 24}, headers=headers)
    answered = datetime.now(UTC)
    assert r.status_code == 200
    new = r.json()["data"]
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert new["scopes"] == ["workspaces:read"] and new["name"] == "Rotating"
    assert_grace_ends_24_hours_after(new, sent, answered)
    assert client.get("/workspaces", headers=bearer(old["key"])).status_code == 200
    assert client.get("/workspaces", headers=bearer(new["key"])).status_code == 200
    assert client.get(f"/api-keys/{old['id']}", headers=headers).json()["data"]["status"] == "rotating"
    again = client.post(f"/api-keys/{old['id']}/rotate", headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_rotation_with_zero_grace_stops_old_key_at_once(client, tenant):
    _, headers = tenant
    old = client.post("/api-keys", json={"name": "Now"}, headers=headers).json()["data"]
    new = client.post(f"/api-keys/{old['id']}/rotate", json={"grace_period_hours": 0}, headers=headers).json()["data"]
    assert client.get("/workspaces", headers=bearer(old["key"])).status_code == 401
    assert client.get("/workspaces", headers=bearer(new["key"])).status_code == 200


def test_rotation_default_grace_is_24_hours(client, tenant):
    _, headers = tenant
    old = client.post("/api-keys", json={"name": "Default grace"}, headers=headers).json()["data"]
    sent = datetime.now(UTC)
    new = client.post(f"/api-keys/{old['id']}/rotate", headers=headers).json()["data"]
    assert_grace_ends_24_hours_after(new, sent, datetime.now(UTC))


def test_rotation_grace_out_of_range_returns_422_and_rotates_nothing(client, tenant, tenants):
    ws, headers = tenant
    old = client.post("/api-keys", json={"name": "Bad grace"}, headers=headers).json()["data"]
    before = key_row(tenants, old["id"])
    for bad in (-1, 721, "24", 1.5, True):
        r = client.post(f"/api-keys/{old['id']}/rotate", json={"grace_period_hours": bad}, headers=headers)
        assert r.status_code == 422, bad
        body = r.json()
        assert body["error"] == "validation_failed" and body["message"] == VALIDATION_MESSAGE, bad
        assert set(body["errors"]) == {"grace_period_hours"} and body["errors"]["grace_period_hours"], bad
        assert "key" not in body
    assert key_row(tenants, old["id"]) == before == {**before, "revoked_at": None, "rotated_to_id": None}
    assert keys_named(tenants, ws["id"], "Bad grace") == 1  # no successor was made
    assert client.get(f"/api-keys/{old['id']}", headers=headers).json()["data"]["status"] == "active"


def test_keys_of_other_workspaces_are_invisible_and_untouched(client, tenant, tenants):
    _, headers = tenant
    other = tenants.workspace()
    other_key = tenants.key(other["id"])
    other_key_id = tenants.fetchval("SELECT max(id) FROM api_keys WHERE workspace_id = $1", other["id"])
    before = key_row(tenants, other_key_id)
    for r in (
        client.get(f"/api-keys/{other_key_id}", headers=headers),
        client.delete(f"/api-keys/{other_key_id}", headers=headers),
        client.post(f"/api-keys/{other_key_id}/rotate", headers=headers),
    ):
        assert r.status_code == 404, r.request
        assert r.json() == {"error": "not_found", "message": "Resource not found."}, r.request
    assert key_row(tenants, other_key_id) == before  # neither revoked nor rotated
    assert tenants.fetchval("SELECT count(*) FROM api_keys WHERE workspace_id = $1", other["id"]) == 1
    assert client.get("/workspaces", headers=bearer(other_key)).status_code == 200


def test_last_used_at_is_recorded_in_batches(client, tenant, tenants):
    _, headers = tenant
    data = client.post("/api-keys", json={"name": "Used"}, headers=headers).json()["data"]
    assert data["last_used_at"] is None
    client.get("/workspaces", headers=bearer(data["key"]))
    deadline = time.monotonic() + DEADLINE_SECONDS  # written every second (server_env)
    while time.monotonic() < deadline:
        if tenants.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", data["id"]) is not None:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"last_used_at not written within {DEADLINE_SECONDS} s")
    assert client.get(f"/api-keys/{data['id']}", headers=headers).json()["data"]["last_used_at"] is not None


def test_rate_limit_tier_filter_matches_the_tier_the_api_shows(client, tenants):
    """A key without a tier of its own follows its workspace: it shows the workspace's tier and
    `?rate_limit_tier=` finds it by that tier; a key stored above a (since lowered) plan is found
    by the plan's tier."""
    workspace = tenants.workspace(tier="pro")
    headers = bearer(tenants.key(workspace["id"]))
    follows = client.post("/api-keys", json={"name": "follows"}, headers=headers).json()["data"]
    own = client.post("/api-keys", json={"name": "own", "rate_limit_tier": "starter"}, headers=headers).json()["data"]
    assert (follows["rate_limit_tier"], own["rate_limit_tier"]) == ("pro", "starter")

    def names(tier: str) -> set[str]:
        page = client.get("/api-keys", params={"rate_limit_tier": tier, "per_page": 100}, headers=headers).json()
        return {item["name"] for item in page["data"]}

    assert "follows" in names("pro") and "follows" not in names("starter")
    assert names("starter") == {"own"}
    tenants.execute("UPDATE api_keys SET rate_limit_tier = 'enterprise' WHERE id = $1", own["id"])
    assert "own" in names("pro") and "own" not in names("enterprise")
    shown = client.get(f"/api-keys/{own['id']}", headers=headers).json()["data"]["rate_limit_tier"]
    assert shown == "pro"
