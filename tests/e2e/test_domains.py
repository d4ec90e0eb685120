"""Pixel domains over HTTP: register, list, change, remove; one claim per workspace and host; scopes."""

import uuid

import pytest


def unique_host() -> str:
    return f"site-{uuid.uuid4().hex[:10]}.example.com"


@pytest.fixture
def headers(tenant):
    return tenant[1]


def test_register_a_host_returns_it_with_default_config(client, tenant):
    ws, headers = tenant
    host = unique_host()
    r = client.post("/pixel/domains", headers=headers, json={"host": host.upper() + "."})
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["host"] == host and data["workspace_id"] == ws["id"]
    assert data["enabled"] is True and data["sample_rate"] == 1.0
    assert data["features"] == {"pageviews": True, "events": True, "sessions": True}
    assert data["session_timeout_minutes"] == 30 and data["honor_privacy_signals"] is True
    assert data["excluded_paths"] == [] and data["visitor_id_rotation"] == "daily"
    assert data["verification"]["status"] == "unverified" and data["verification"]["verified_at"] is None
    assert client.get(f"/pixel/domains/{data['id']}", headers=headers).json()["data"] == data


def test_list_shows_only_the_callers_workspace(client, tenants, headers):
    mine = client.post("/pixel/domains", headers=headers, json={"host": unique_host()}).json()["data"]
    other = tenants.workspace()
    other_headers = {"Authorization": f"Bearer {tenants.key(other['id'])}"}
    client.post("/pixel/domains", headers=other_headers, json={"host": unique_host()})
    body = client.get("/pixel/domains", headers=headers).json()
    assert [d["id"] for d in body["data"]] == [mine["id"]]
    assert body["meta"]["total"] == 1
    assert client.get(f"/pixel/domains/{mine['id']}", headers=other_headers).status_code == 404


def test_several_workspaces_may_claim_a_host_but_one_workspace_only_once(client, tenants, headers):
    """Claims are unverified until proven (tests/e2e/test_domain_verification.py); the claim
    that proves control wins, so a first claim must not lock the host for everyone else."""
    host = unique_host()
    mine = client.post("/pixel/domains", headers=headers, json={"host": host})
    assert mine.status_code == 201
    other = tenants.workspace()
    theirs = client.post(
        "/pixel/domains", headers={"Authorization": f"Bearer {tenants.key(other['id'])}"}, json={"host": host}
    )
    assert theirs.status_code == 201
    assert theirs.json()["data"]["verification"]["token"] != mine.json()["data"]["verification"]["token"]
    again = client.post("/pixel/domains", headers=headers, json={"host": host})
    assert again.status_code == 409
    assert again.json() == {"error": "conflict", "message": f"The host {host} is already registered in this workspace."}


@pytest.mark.parametrize(
    "host",
    [
        "https://example.com",
        "example.com/path",
        "example.com:8080",
        "-bad-.com",
        "a..b",
        "",
        " ",
        7,
        "com",
        "localhost",
        " example.com",
        "bücher.de",
        "a" * 64 + ".com",
    ],
)
def test_a_url_or_anything_not_a_host_name_is_refused(client, headers, host):
    """What the body's host pattern refuses: a single label (always a public suffix), spaces, and
    anything but ASCII (international names come in their punycode form)."""
    r = client.post("/pixel/domains", headers=headers, json={"host": host})
    assert r.status_code == 422
    assert "host" in r.json()["errors"]


@pytest.mark.parametrize("host", ["co.uk", "github.io", "anything.ck"])
def test_a_public_suffix_is_nobodys_to_claim(client, headers, host):
    """A valid host name the Public Suffix List reserves: refused for what it is, not for its form (403)."""
    r = client.post("/pixel/domains", headers=headers, json={"host": host.upper() + "."})
    assert r.status_code == 403
    assert r.json() == {
        "error": "access_denied",
        "message": f"{host} is a public suffix (as com or co.uk are): register your own domain.",
    }


def test_null_config_fields_leave_them_unchanged_and_a_punycode_host_is_kept(client, headers):
    host = "xn--bcher-kva." + unique_host()
    domain = client.post(
        "/pixel/domains", headers=headers, json={"host": host, "enabled": None, "sample_rate": None}
    ).json()["data"]
    assert domain["host"] == host and domain["enabled"] is True and domain["sample_rate"] == 1.0
    r = client.patch(f"/pixel/domains/{domain['id']}", headers=headers, json={"features": {"events": None}})
    assert r.status_code == 200 and r.json()["data"]["features"]["events"] is True
    assert client.patch(f"/pixel/domains/{domain['id']}", headers=headers, json={"features": None}).status_code == 422


def test_config_fields_are_validated_one_by_one(client, headers):
    r = client.post(
        "/pixel/domains",
        headers=headers,
        json={
            "host": unique_host(),
            "enabled": "yes",
            "sample_rate": 1.5,
            "features": {"pageviews": 1, "clicks": True},
        },
    )
    assert r.status_code == 422
    assert set(r.json()["errors"]) == {"enabled", "sample_rate", "features.pageviews", "features.clicks"}


def test_patch_changes_config_but_not_the_host_and_delete_frees_the_host(client, tenants, headers):
    host = unique_host()
    domain = client.post("/pixel/domains", headers=headers, json={"host": host}).json()["data"]
    r = client.patch(
        f"/pixel/domains/{domain['id']}", headers=headers, json={"sample_rate": 0.25, "features": {"sessions": False}}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["sample_rate"] == 0.25
    assert data["features"] == {"pageviews": True, "events": True, "sessions": False}
    assert client.patch(f"/pixel/domains/{domain['id']}", headers=headers, json={"host": "x.com"}).status_code == 422
    assert client.delete(f"/pixel/domains/{domain['id']}", headers=headers).status_code == 204
    assert client.get(f"/pixel/domains/{domain['id']}", headers=headers).status_code == 404
    other = tenants.workspace()
    r = client.post(
        "/pixel/domains", headers={"Authorization": f"Bearer {tenants.key(other['id'])}"}, json={"host": host}
    )
    assert r.status_code == 201


def test_domain_routes_need_pixel_scopes(client, tenants):
    ws = tenants.workspace()
    reader = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['pixel:read'])}"}
    assert client.get("/pixel/domains", headers=reader).status_code == 200
    r = client.post("/pixel/domains", headers=reader, json={"host": unique_host()})
    assert r.status_code == 403
    assert r.json()["message"] == "Insufficient permissions. Required scope: pixel:write"
    assert client.get("/pixel/domains").status_code == 401


# -- privacy and session settings ---------------------------------------------------------------

SETTINGS = {
    "session_timeout_minutes": 45,
    "honor_privacy_signals": False,
    "excluded_paths": ["/admin/**", "/preview/*", "/checkout"],
    "visitor_id_rotation": "weekly",
}


def settings_of(data: dict) -> dict:
    return {name: data[name] for name in SETTINGS}


def test_privacy_and_session_settings_are_taken_on_create(client, headers):
    r = client.post("/pixel/domains", headers=headers, json={"host": unique_host(), **SETTINGS})
    assert r.status_code == 201, r.text
    assert settings_of(r.json()["data"]) == SETTINGS
    got = client.get(f"/pixel/domains/{r.json()['data']['id']}", headers=headers).json()["data"]
    assert settings_of(got) == SETTINGS


def test_each_setting_changes_alone_and_null_or_absent_leaves_the_others(client, headers):
    domain = client.post("/pixel/domains", headers=headers, json={"host": unique_host()}).json()["data"]
    expected = settings_of(domain)
    for name, value in SETTINGS.items():
        r = client.patch(
            f"/pixel/domains/{domain['id']}",
            headers=headers,
            json={name: value, **{other: None for other in SETTINGS if other != name}},
        )
        assert r.status_code == 200, r.text
        expected[name] = value
        assert settings_of(r.json()["data"]) == expected
    assert settings_of(client.get(f"/pixel/domains/{domain['id']}", headers=headers).json()["data"]) == SETTINGS


def test_excluded_paths_are_kept_in_order_without_duplicates_and_an_empty_list_clears_them(client, headers):
    domain = client.post(
        "/pixel/domains", headers=headers, json={"host": unique_host(), "excluded_paths": ["/b", "/a/**", "/b"]}
    ).json()["data"]
    assert domain["excluded_paths"] == ["/b", "/a/**"]
    r = client.patch(f"/pixel/domains/{domain['id']}", headers=headers, json={"excluded_paths": []})
    assert r.status_code == 200 and r.json()["data"]["excluded_paths"] == []
    full = [f"/p{i}/**" for i in range(50)]
    r = client.patch(f"/pixel/domains/{domain['id']}", headers=headers, json={"excluded_paths": full})
    assert r.status_code == 200 and r.json()["data"]["excluded_paths"] == full


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_timeout_minutes", 0),
        ("session_timeout_minutes", 241),
        ("session_timeout_minutes", 30.5),
        ("session_timeout_minutes", "30"),
        ("honor_privacy_signals", "yes"),
        ("honor_privacy_signals", 1),
        ("visitor_id_rotation", "hourly"),
        ("visitor_id_rotation", "Daily"),
        ("excluded_paths", "/admin/**"),
        ("excluded_paths", ["admin/**"]),
        ("excluded_paths", [""]),
        ("excluded_paths", ["/" + "a" * 200]),
        ("excluded_paths", ["/has space"]),
        ("excluded_paths", ["/page?x=1"]),
        ("excluded_paths", ["/page#top"]),
        ("excluded_paths", ["/café"]),
        ("excluded_paths", [None]),
        ("excluded_paths", [f"/p{i}" for i in range(51)]),
    ],
)
def test_a_bad_setting_is_refused_naming_the_field(client, headers, field, value):
    created = client.post("/pixel/domains", headers=headers, json={"host": unique_host(), field: value})
    assert created.status_code == 422, created.text
    assert created.json()["error"] == "validation_failed" and list(created.json()["errors"]) == [field]
    domain = client.post("/pixel/domains", headers=headers, json={"host": unique_host()}).json()["data"]
    changed = client.patch(f"/pixel/domains/{domain['id']}", headers=headers, json={field: value})
    assert changed.status_code == 422 and list(changed.json()["errors"]) == [field]
    assert settings_of(client.get(f"/pixel/domains/{domain['id']}", headers=headers).json()["data"]) == settings_of(
        domain
    )


def test_the_limits_themselves_are_accepted(client, headers):
    body = {"session_timeout_minutes": 1, "excluded_paths": ["/", "/" + "a" * 199], "visitor_id_rotation": "monthly"}
    r = client.post("/pixel/domains", headers=headers, json={"host": unique_host(), **body})
    assert r.status_code == 201, r.text
    r = client.patch(f"/pixel/domains/{r.json()['data']['id']}", headers=headers, json={"session_timeout_minutes": 240})
    assert r.status_code == 200 and r.json()["data"]["session_timeout_minutes"] == 240


def test_the_listing_can_select_the_settings(client, headers):
    client.post("/pixel/domains", headers=headers, json={"host": unique_host(), **SETTINGS})
    r = client.get("/pixel/domains", headers=headers, params={"fields": "id,excluded_paths,visitor_id_rotation"})
    assert r.status_code == 200, r.text
    [item] = r.json()["data"]
    assert set(item) == {"id", "excluded_paths", "visitor_id_rotation"}
    assert item["excluded_paths"] == SETTINGS["excluded_paths"]
