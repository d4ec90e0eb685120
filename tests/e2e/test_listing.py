"""The shared listing behaviour over HTTP: pagination, links, sort, filters, fields, include."""

from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = ["delta", "alpha", "echo", "bravo", "golf", "charlie", "foxtrot"]


@pytest.fixture(scope="module")
def account(client, tenants):
    """One account holding its own workspace plus seven named ones."""
    home = tenants.workspace("home")
    headers = {"Authorization": f"Bearer {tenants.key(home['id'])}"}
    for i, name in enumerate(NAMES):
        tier = "pro" if i % 2 else "free"
        assert client.post("/workspaces", json={"name": name, "tier": tier}, headers=headers).status_code == 201
    return home, headers


def test_pagination_arithmetic_and_links(client, account):
    _, headers = account
    r = client.get("/workspaces", params={"per_page": 3, "page": 2, "sort": "name"}, headers=headers)
    body = r.json()
    assert body["meta"] == {"current_page": 2, "from": 4, "last_page": 3, "per_page": 3, "to": 6, "total": 8}
    assert [w["name"] for w in body["data"]] == ["delta", "echo", "foxtrot"]
    links = body["links"]
    for name, page in (("first", "1"), ("last", "3"), ("prev", "1"), ("next", "3")):
        url = urlsplit(links[name])
        assert url.scheme == "http" and url.path == "/api/v1/workspaces"
        assert parse_qs(url.query) == {"per_page": ["3"], "sort": ["name"], "page": [page]}


def test_last_and_beyond_last_page(client, account):
    _, headers = account
    last = client.get("/workspaces", params={"per_page": 3, "page": 3, "sort": "name"}, headers=headers).json()
    assert [w["name"] for w in last["data"]] == ["golf", "home"] and last["links"]["next"] is None
    beyond = client.get("/workspaces", params={"per_page": 3, "page": 9}, headers=headers).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 8 and beyond["meta"]["from"] is None


def test_default_page_size_is_25(client, account):
    _, headers = account
    assert client.get("/workspaces", headers=headers).json()["meta"]["per_page"] == 25


@pytest.mark.parametrize(
    "params,field",
    [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 101}, "per_page"),
        ({"per_page": "ten"}, "per_page"),
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"page": "1.5"}, "page"),
        ({"sort": "password"}, "sort"),
        ({"sort": "name;DROP TABLE workspaces"}, "sort"),
        ({"sort": "name,"}, "sort"),
        ({"fields": "id,secret"}, "fields"),
        ({"include": "owner"}, "include"),
        ({"status": "active"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"search": "x" * 101}, "search"),
    ],
)
def test_invalid_listing_parameter_returns_422(client, account, params, field):
    _, headers = account
    r = client.get("/workspaces", params=params, headers=headers)
    assert r.status_code == 422
    assert field in r.json()["errors"]


def test_sort_by_several_fields(client, account):
    _, headers = account
    data = client.get("/workspaces", params={"sort": "-tier,name", "search": "o"}, headers=headers).json()["data"]
    assert [(w["tier"], w["name"]) for w in data] == [
        ("pro", "bravo"),
        ("free", "echo"),
        ("free", "foxtrot"),
        ("free", "golf"),
        ("enterprise", "home"),
    ]


def test_filter_search_and_dates(client, account):
    _, headers = account
    pro = client.get("/workspaces", params={"tier": "pro"}, headers=headers).json()
    assert pro["meta"]["total"] == 3 and all(w["tier"] == "pro" for w in pro["data"])
    assert client.get("/workspaces", params={"search": "ALP"}, headers=headers).json()["meta"]["total"] == 1
    assert client.get("/workspaces", params={"search": "%"}, headers=headers).json()["meta"]["total"] == 0
    later = client.get("/workspaces", params={"created_after": "2100-01-01"}, headers=headers).json()
    assert later["meta"]["total"] == 0
    earlier = client.get(
        "/workspaces", params={"created_after": "2000-01-01T00:00:00Z", "updated_before": "2100-01-01"}, headers=headers
    ).json()
    assert earlier["meta"]["total"] == 8


def test_fields_and_include(client, account):
    _, headers = account
    data = client.get(
        "/workspaces", params={"fields": "id,name", "include": "account", "per_page": 1}, headers=headers
    ).json()["data"]
    assert set(data[0]) == {"id", "name", "account"}
    assert set(data[0]["account"]) == {"id", "name", "created_at"}


def test_listing_shows_only_the_callers_account(client, account, tenants):
    _, headers = account
    tenants.workspace("stranger")
    names = {w["name"] for w in client.get("/workspaces", params={"per_page": 100}, headers=headers).json()["data"]}
    assert "stranger" not in names


def test_api_keys_status_filter(client, tenant):
    _, headers = tenant
    a = client.post("/api-keys", json={"name": "a"}, headers=headers).json()["data"]
    client.delete(f"/api-keys/{a['id']}", headers=headers)
    revoked = client.get("/api-keys", params={"status": "revoked"}, headers=headers).json()["data"]
    assert [k["id"] for k in revoked] == [a["id"]]
    active = client.get("/api-keys", params={"status": "active"}, headers=headers).json()["data"]
    assert a["id"] not in [k["id"] for k in active] and active


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_page=st.integers(1, 10), sort=st.sampled_from(["name", "-name", "tier,-id", "-created_at", "slug"]))
def test_walking_every_page_yields_each_item_once(client, account, per_page, sort):
    _, headers = account
    seen, page = [], 1
    while True:
        body = client.get(
            "/workspaces", params={"per_page": per_page, "page": page, "sort": sort}, headers=headers
        ).json()
        seen += [w["id"] for w in body["data"]]
        if body["links"]["next"] is None:
            break
        page += 1
    assert len(seen) == len(set(seen)) == body["meta"]["total"] == 8
    assert page == body["meta"]["last_page"]
