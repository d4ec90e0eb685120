"""Behaviour every endpoint shares: envelopes, request ids, bodies, auth header, workspace header."""

import httpx
import pytest

ENVELOPE_KEYS = {"error", "message"}
MAX_BODY_BYTES = 65536  # SLUICE_MAX_BODY_BYTES of the tests' server (tests/conftest.py)
TOO_LARGE = {
    "error": "payload_too_large",
    "message": f"Request body is larger than the limit of {MAX_BODY_BYTES} bytes.",
}


def workspaces_of(tenants, workspace: dict) -> int:
    """How many workspaces the tenant's account holds: a refused POST /workspaces adds none."""
    return tenants.fetchval("SELECT count(*) FROM workspaces WHERE account_id = $1", workspace["account_id"])


def test_unknown_route_returns_404_envelope(client):
    r = client.get("/no-such-thing")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "message": "Resource not found."}


def test_wrong_method_returns_405_envelope_with_allow(client, tenant):
    _, headers = tenant
    r = client.put("/workspaces", headers=headers)
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}


def test_request_id_is_generated_when_absent(client):
    r = client.get("/workspaces")
    assert r.headers["x-request-id"].startswith("req_")


def test_sane_request_id_is_echoed(client):
    r = client.get("/workspaces", headers={"X-Request-ID": "abc-123.def"})
    assert r.headers["x-request-id"] == "abc-123.def"


def test_hostile_request_id_is_replaced(client):
    r = client.get("/workspaces", headers={"X-Request-ID": "x" * 300})
    assert r.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic abc",
        "Bearer sk_live_short",
        "Bearer sk_live_" + "A" * 40,
        "Token sk_live_" + "A" * 40,
    ],
)
def test_missing_or_bad_key_returns_401_envelope(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    r = client.get("/workspaces", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "message": "Invalid or missing API key."}
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_malformed_json_returns_400_envelope(client, tenant, tenants):
    ws, headers = tenant
    r = client.post("/workspaces", content=b'{"name": ', headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()) == ENVELOPE_KEYS and r.json()["error"] == "invalid_json"
    assert r.json()["message"].startswith("Malformed JSON body: ")
    assert workspaces_of(tenants, ws) == 1


def test_wrong_content_type_returns_400_envelope(client, tenant):
    _, headers = tenant
    r = client.post(
        "/workspaces", content=b"name=x", headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_content_type"


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null"])
def test_non_object_json_body_returns_422(client, tenant, body):
    _, headers = tenant
    r = client.post("/workspaces", content=body, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert "body" in r.json()["errors"]


def test_body_over_limit_returns_413_envelope(client, tenant, tenants):
    ws, headers = tenant
    big = b'{"name": "' + b"x" * 70_000 + b'"}'
    r = client.post("/workspaces", content=big, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json() == TOO_LARGE
    assert workspaces_of(tenants, ws) == 1


def test_every_oversized_body_gets_its_413_not_a_reset_connection(client, tenant, tenants):
    """The server reads a slightly oversized body before answering: closing a socket with unread
    data resets it, and the client would lose the answer (this failed about one run in ten)."""
    ws, headers = tenant
    big = b'{"name": "' + b"x" * 300_000 + b'"}'
    for _ in range(30):
        r = client.post("/workspaces", content=big, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json() == TOO_LARGE
    listed = client.get("/workspaces", headers=headers)  # the connection still serves
    assert listed.status_code == 200 and [w["id"] for w in listed.json()["data"]] == [ws["id"]]
    assert workspaces_of(tenants, ws) == 1


def test_chunked_body_over_limit_returns_413(client, tenant, tenants):
    """No Content-Length to refuse up front: the limit holds while the chunks are read."""
    ws, headers = tenant

    def chunks():
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    r = client.post("/workspaces", content=chunks(), headers={**headers, "Content-Type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413
    assert r.json() == TOO_LARGE
    assert workspaces_of(tenants, ws) == 1


def test_invalid_utf8_body_is_400_not_500(client, tenant, tenants):
    ws, headers = tenant
    r = client.post(
        "/workspaces", content=b'{"name": "\xff\xfe"}', headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert set(r.json()) == ENVELOPE_KEYS and r.json()["error"] == "invalid_json"
    assert r.json()["message"].startswith("Malformed JSON body: ")
    assert workspaces_of(tenants, ws) == 1


def test_foreign_workspace_header_returns_403(client, tenant, tenants):
    _, headers = tenant
    other = tenants.workspace()
    r = client.get("/api-keys", headers={**headers, "X-Workspace-ID": str(other["id"])})
    assert r.status_code == 403
    assert set(r.json()) == ENVELOPE_KEYS and r.json()["error"] == "access_denied"


def test_own_workspace_header_is_accepted(client, tenant):
    ws, headers = tenant
    r = client.get("/api-keys", headers={**headers, "X-Workspace-ID": str(ws["id"])})
    assert r.status_code == 200
    assert [key["workspace_id"] for key in r.json()["data"]] == [ws["id"]]


def test_malformed_workspace_header_returns_422(client, tenant):
    _, headers = tenant
    r = client.get("/api-keys", headers={**headers, "X-Workspace-ID": "abc"})
    assert r.status_code == 422
    assert "X-Workspace-ID" in r.json()["errors"]


def test_healthz_answers(api):
    r = httpx.get(api + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_reports_every_dependency_ready(api):
    r = httpx.get(api + "/readyz", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"}}


def test_openapi_document_lists_every_route(api):
    from app.main import api_routes

    doc = httpx.get(api + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for route in api_routes():
        path = route.path.replace("{path:uri}", "{uri}")  # BlackSheep's catch-all, named plainly
        operation = doc["paths"][path][route.method.lower()]
        assert operation.get("x-required-scope") == route.scope


def test_docs_page_is_html(api):
    r = httpx.get(api + "/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/api/v1/workspaces" in r.text
