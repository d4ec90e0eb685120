"""Workspaces over HTTP against the real stack."""

import pytest


def test_create_workspace_returns_201_with_generated_slug(client, tenant):
    _, headers = tenant
    r = client.post("/workspaces", json={"name": "Ünïcode Café & Co", "tier": "pro"}, headers=headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["message"] == "Workspace created successfully."
    assert body["data"]["slug"] == "unicode-cafe-co"
    assert body["data"]["tier"] == "pro"
    assert body["data"]["created_at"].endswith("Z")


def test_generated_slugs_stay_unique(client, tenant):
    _, headers = tenant
    slugs = {
        client.post("/workspaces", json={"name": "Same Name"}, headers=headers).json()["data"]["slug"] for _ in range(3)
    }
    assert len(slugs) == 3


def test_taken_explicit_slug_is_a_conflict_naming_the_field(client, tenant):
    """A slug valid in itself that another workspace holds: 409 (the state refuses it, not the
    shape), with the field named as a 422 would name it."""
    _, headers = tenant
    assert client.post("/workspaces", json={"name": "A", "slug": "taken-slug-x"}, headers=headers).status_code == 201
    r = client.post("/workspaces", json={"name": "B", "slug": "taken-slug-x"}, headers=headers)
    assert r.status_code == 409
    assert r.json()["error"] == "conflict" and "slug" in r.json()["errors"]


def test_default_tier_is_free(client, tenant):
    _, headers = tenant
    assert client.post("/workspaces", json={"name": "Plain"}, headers=headers).json()["data"]["tier"] == "free"


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": 12}, "name"),
        ({"name": "ok", "tier": "business"}, "tier"),
        ({"name": "ok", "slug": "Not A Slug"}, "slug"),
        ({"name": "ok", "settings": {"timezone": "Mars/Olympus"}}, "settings.timezone"),
        ({"name": "ok", "settings": {"locale": "english"}}, "settings.locale"),
        ({"name": "ok", "settings": {"colour": "red"}}, "settings.colour"),
        ({"name": "ok", "settings": "UTC"}, "settings"),
        ({"name": "ok", "owner": 1}, "owner"),
    ],
)
def test_invalid_workspace_returns_422_naming_the_field(client, tenant, body, field):
    _, headers = tenant
    r = client.post("/workspaces", json=body, headers=headers)
    assert r.status_code == 422
    payload = r.json()
    assert payload["error"] == "validation_failed"
    assert payload["message"] == "The given data was invalid."
    assert field in payload["errors"] and payload["errors"][field]


def test_name_of_exactly_255_chars_is_accepted(client, tenant):
    _, headers = tenant
    assert client.post("/workspaces", json={"name": "x" * 255}, headers=headers).status_code == 201


def test_get_workspace_includes_settings_with_defaults(client, tenant):
    ws, headers = tenant
    r = client.get(f"/workspaces/{ws['id']}", headers=headers)
    assert r.status_code == 200
    assert r.json()["data"]["settings"] == {"timezone": "UTC", "locale": "en_GB"}


def test_get_missing_workspace_returns_404(client, tenant):
    _, headers = tenant
    for missing in ("999999999", "abc", "-1"):
        r = client.get(f"/workspaces/{missing}", headers=headers)
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"


def test_workspace_of_another_account_returns_403(client, tenant, tenants):
    _, headers = tenant
    other = tenants.workspace()
    for method in ("GET", "PATCH", "DELETE"):
        r = client.request(method, f"/workspaces/{other['id']}", headers=headers, json={"name": "x"})
        assert r.status_code == 403
        assert r.json()["error"] == "access_denied"


def test_patch_merges_settings_and_bumps_updated_at(client, tenant):
    ws, headers = tenant
    r1 = client.patch(f"/workspaces/{ws['id']}", json={"settings": {"timezone": "Europe/London"}}, headers=headers)
    assert r1.status_code == 200
    r2 = client.patch(
        f"/workspaces/{ws['id']}", json={"name": "Renamed", "settings": {"locale": "fr_FR"}}, headers=headers
    )
    data = r2.json()["data"]
    assert data["name"] == "Renamed"
    assert data["settings"] == {"timezone": "Europe/London", "locale": "fr_FR"}
    r3 = client.patch(f"/workspaces/{ws['id']}", json={"settings": {"timezone": None}}, headers=headers)
    assert r3.json()["data"]["settings"]["timezone"] == "UTC"


def test_patch_invalid_returns_422(client, tenant):
    ws, headers = tenant
    r = client.patch(f"/workspaces/{ws['id']}", json={"tier": "gold", "name": None}, headers=headers)
    assert r.status_code == 422
    assert set(r.json()["errors"]) == {"tier", "name"}


def test_delete_workspace_returns_204_and_its_keys_stop_working(client, tenant, tenants):
    ws, headers = tenant
    doomed = client.post("/workspaces", json={"name": "Doomed"}, headers=headers).json()["data"]
    doomed_key = tenants.key(doomed["id"])
    doomed_headers = {"Authorization": f"Bearer {doomed_key}"}
    assert client.get("/api-keys", headers=doomed_headers).status_code == 200
    assert client.delete(f"/workspaces/{doomed['id']}", headers=headers).status_code == 204
    assert client.get(f"/workspaces/{doomed['id']}", headers=headers).status_code == 404
    assert client.get("/api-keys", headers=doomed_headers).status_code == 401
    assert client.delete(f"/workspaces/{doomed['id']}", headers=headers).status_code == 404
