"""Every route checks its scope: a key lacking exactly that scope is refused with 403."""

import pytest

from app.access.scopes import ALL_SCOPES
from app.main import api_routes

# The only routes reachable without an API key. A new route must either declare a
# scope or be added here on purpose.
# No API key by design: health and docs, and what websites call from visitors' browsers.
PUBLIC_PATHS = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/api/v1/pixel/config",
    "/api/v1/pixel/track",
    "/pixel.js",
    "/api/v1/pixel/pixel.js",
}
ROUTES = api_routes()


def test_every_route_declares_a_scope_or_is_known_public():
    for route in ROUTES:
        if route.scope is None:
            assert route.path in PUBLIC_PATHS, f"{route.method} {route.path} has no scope"
        else:
            assert route.scope in ALL_SCOPES, f"{route.method} {route.path}: unknown scope {route.scope}"


@pytest.mark.parametrize("route", [r for r in ROUTES if r.scope], ids=lambda r: f"{r.method} {r.path}")
def test_route_refuses_key_without_its_scope(api, tenants, route):
    import httpx

    ws = tenants.workspace()
    key = tenants.key(ws["id"], scopes=[s for s in ALL_SCOPES if s != route.scope])
    path = route.path.replace("{id}", str(ws["id"]))
    r = httpx.request(route.method, api + path, headers={"Authorization": f"Bearer {key}"}, json={})
    assert r.status_code == 403, r.text
    assert r.json() == {"error": "access_denied", "message": f"Insufficient permissions. Required scope: {route.scope}"}


@pytest.mark.parametrize("route", [r for r in ROUTES if r.scope], ids=lambda r: f"{r.method} {r.path}")
def test_route_refuses_request_without_key(api, route):
    import httpx

    r = httpx.request(route.method, api + route.path.replace("{id}", "1"), json={})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"


def test_resource_wildcard_grants_its_actions(client, tenants):
    ws = tenants.workspace()
    key = tenants.key(ws["id"], scopes=["workspaces:*"])
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(f"/workspaces/{ws['id']}", headers=headers).status_code == 200
    assert client.get("/api-keys", headers=headers).status_code == 403
