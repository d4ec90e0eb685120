"""API keys over HTTP: shown once, stored hashed, rotated with grace, revoked at once."""

import hashlib
import time
from datetime import UTC, datetime, timedelta


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


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
    r = client.post("/api-keys", json={"name": "Escalate", "scopes": ["workspaces:delete"]}, headers=bearer(narrow))
    assert r.status_code == 422 and "scopes" in r.json()["errors"]
    r = client.post("/api-keys", json={"name": "Escalate", "scopes": ["*"]}, headers=bearer(narrow))
    assert r.status_code == 422


def test_invalid_key_request_returns_422_per_field(client, tenant):
    _, headers = tenant
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = client.post(
        "/api-keys", json={"scopes": ["posts:fly"], "rate_limit_tier": "gold", "expires_at": past}, headers=headers
    )
    assert r.status_code == 422
    assert set(r.json()["errors"]) == {"name", "scopes", "rate_limit_tier", "expires_at"}


def test_expired_key_is_rejected(client, tenants):
    ws = tenants.workspace()
    key = tenants.key(ws["id"], expires_at=datetime.now(UTC) + timedelta(seconds=1))
    assert client.get("/api-keys", headers=bearer(key)).status_code == 200
    time.sleep(1.2)
    r = client.get("/api-keys", headers=bearer(key))
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_revoke_takes_effect_at_once(client, tenant):
    _, headers = tenant
    data = client.post("/api-keys", json={"name": "Short-lived"}, headers=headers).json()["data"]
    assert client.get("/workspaces", headers=bearer(data["key"])).status_code == 200
    assert client.delete(f"/api-keys/{data['id']}", headers=headers).status_code == 204
    assert client.get("/workspaces", headers=bearer(data["key"])).status_code == 401
    assert client.get(f"/api-keys/{data['id']}", headers=headers).json()["data"]["status"] == "revoked"
    assert client.delete("/api-keys/999999999", headers=headers).status_code == 404


def test_rotation_keeps_old_key_for_grace_period(client, tenant):
    _, headers = tenant
    old = client.post("/api-keys", json={"name": "Rotating", "scopes": ["workspaces:read"]}, headers=headers).json()[
        "data"
    ]
    r = client.post(f"/api-keys/{old['id']}/rotate", json={"grace_period_hours": 24}, headers=headers)
    assert r.status_code == 200
    new = r.json()["data"]
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert new["scopes"] == ["workspaces:read"] and new["name"] == "Rotating"
    ends = datetime.fromisoformat(new["grace_period_ends_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=24)
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
    new = client.post(f"/api-keys/{old['id']}/rotate", headers=headers).json()["data"]
    ends = datetime.fromisoformat(new["grace_period_ends_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=24)


def test_rotation_grace_out_of_range_returns_422(client, tenant):
    _, headers = tenant
    old = client.post("/api-keys", json={"name": "Bad grace"}, headers=headers).json()["data"]
    for bad in (-1, 721, "24", 1.5, True):
        r = client.post(f"/api-keys/{old['id']}/rotate", json={"grace_period_hours": bad}, headers=headers)
        assert r.status_code == 422, bad


def test_keys_of_other_workspaces_are_invisible(client, tenant, tenants):
    _, headers = tenant
    other = tenants.workspace()
    tenants.key(other["id"])
    other_key_id = tenants.fetchval("SELECT max(id) FROM api_keys WHERE workspace_id = $1", other["id"])
    assert client.get(f"/api-keys/{other_key_id}", headers=headers).status_code == 404
    assert client.delete(f"/api-keys/{other_key_id}", headers=headers).status_code == 404
    assert client.post(f"/api-keys/{other_key_id}/rotate", headers=headers).status_code == 404


def test_last_used_at_is_recorded_in_batches(client, tenant, tenants):
    _, headers = tenant
    data = client.post("/api-keys", json={"name": "Used"}, headers=headers).json()["data"]
    assert data["last_used_at"] is None
    client.get("/workspaces", headers=bearer(data["key"]))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if tenants.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", data["id"]) is not None:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("last_used_at never written")
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
