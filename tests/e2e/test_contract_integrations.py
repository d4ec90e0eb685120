"""The contract of the webhooks, SEO and MCP routes over HTTP: each declared limit is accepted just
inside and refused just outside with 422 naming the field, the document agrees (the body or query
sent is valid, or not, against GET /openapi.json), and every 2xx body validates against the
route's answer schema there. The API runs with the default MCP registry (filesystem, analytics)."""

import base64
import re
import string

import httpx
import pytest
from jsonschema import Draft202012Validator

from app.resources.webhooks import SECRET
from ingest.webhooks.signing import decode_secret
from tests.e2e.test_seo import REPORT, SCORES

WEBHOOKS = "/api/v1/webhooks"
BASE64 = string.ascii_letters + string.digits + "+/"


@pytest.fixture(scope="module")
def document(api) -> dict:
    return httpx.get(api + "/openapi.json").json()


def operation(document: dict, method: str, path: str) -> dict:
    return document["paths"][path][method.lower()]


def body_schema(document: dict, method: str, path: str) -> dict:
    return operation(document, method, path)["requestBody"]["content"]["application/json"]["schema"]


def valid(schema: dict, value) -> bool:
    return Draft202012Validator(schema).is_valid(value)


def conforms(document: dict, method: str, path: str, response: httpx.Response) -> dict:
    """The answer's body, after checking it against the operation's schema for its status."""
    assert 200 <= response.status_code < 300, response.text
    documented = operation(document, method, path)["responses"][str(response.status_code)]
    errors = list(
        Draft202012Validator(documented["content"]["application/json"]["schema"]).iter_errors(response.json())
    )
    assert errors == [], [e.message for e in errors]
    return response.json()


def refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert field in response.json()["errors"], response.json()


# --- webhooks -------------------------------------------------------------------------------


def endpoint(url="https://hooks.example.com/in", events=("*",), **extra) -> dict:
    return {"url": url, "events": list(events), **extra}


def create_webhook(client, headers, body) -> httpx.Response:
    return client.post("/webhooks", json=body, headers=headers)


def secret_of(size: int, padded: bool = True) -> str:
    encoded = base64.b64encode(bytes(range(size))).decode()
    return "whsec_" + (encoded if padded else encoded.rstrip("="))


@pytest.mark.parametrize(
    "field, inside, outside",
    [
        (
            "url",
            endpoint("https://hooks.example.com/" + "a" * 2022),
            endpoint("https://hooks.example.com/" + "a" * 2023),
        ),
        ("url", endpoint("https://hooks.example.com:65535/in"), endpoint("https://hooks.example.com:65536/in")),
        ("url", endpoint("https://xn--bcher-kva.example./in?a=%20#x"), endpoint("https://b\u00fccher.example/in")),
        ("url", endpoint("https://hooks.example.com/in"), endpoint("https://user@hooks.example.com/in")),
        ("url", endpoint("https://hooks.example.com/in"), endpoint("https://[2606:2800:220:1::248]/in")),
        ("url", endpoint("https://hooks.example.com./in"), endpoint("https://93.184.216.34./in")),
        ("url", endpoint("https://x0.example/in"), endpoint("https://hooks.0x7f/in")),
        ("url", endpoint("https://2130706433.example/in"), endpoint("https://2130706433/in")),
        ("events", endpoint(events=["a" * 98 + ".*"]), endpoint(events=["a" * 99 + ".*"])),
        ("events", endpoint(events=["seo.report.created"]), endpoint(events=["seo.report"])),
        ("secret", endpoint(secret=secret_of(24)), endpoint(secret=secret_of(23))),
        ("secret", endpoint(secret=secret_of(64, padded=False)), endpoint(secret=secret_of(65, padded=False))),
        ("secret", endpoint(secret=secret_of(64)), endpoint(secret=secret_of(24) + "=")),
    ],
)
def test_webhook_limits_are_accepted_inside_and_refused_outside(client, tenant, document, field, inside, outside):
    _, headers = tenant
    schema = body_schema(document, "POST", WEBHOOKS)
    assert valid(schema, inside)
    r = create_webhook(client, headers, inside)
    assert r.status_code == 201, r.text
    conforms(document, "POST", WEBHOOKS, r)
    assert not valid(schema, outside)
    refused(create_webhook(client, headers, outside), field)


def test_fifty_events_are_accepted_duplicates_kept_once_and_fifty_one_refused(client, tenant, document):
    _, headers = tenant
    names = [f"{a}{b}.*" for a in "abcdefgh" for b in "abcdefgh"]
    schema = body_schema(document, "POST", WEBHOOKS)
    assert valid(schema, endpoint(events=names[:50])) and not valid(schema, endpoint(events=names[:51]))
    assert create_webhook(client, headers, endpoint(events=names[:50])).json()["data"]["events"] == names[:50]
    twice = create_webhook(client, headers, endpoint(events=["seo.*", "seo.*"]))
    assert twice.json()["data"]["events"] == ["seo.*"]
    refused(create_webhook(client, headers, endpoint(events=names[:51])), "events")


def test_a_replayed_creation_matches_the_answer_with_its_secret_redacted(client, tenant, document):
    headers = {**tenant[1], "Idempotency-Key": "contract-b-replay"}
    first = conforms(document, "POST", WEBHOOKS, create_webhook(client, headers, endpoint()))
    replay = create_webhook(client, headers, endpoint())
    assert replay.headers["Idempotent-Replayed"] == "true"
    data = conforms(document, "POST", WEBHOOKS, replay)["data"]
    assert (data["id"], data["secret"], data["secret_redacted"]) == (first["data"]["id"], None, True)


def test_a_local_host_name_is_schema_valid_but_refused_as_the_description_says(client, tenant, document):
    _, headers = tenant
    schema = body_schema(document, "POST", WEBHOOKS)
    assert "localhost" in schema["properties"]["url"]["description"]
    for url in ("https://localhost/in", "https://printer.local./in", "https://db.internal:8443/in"):
        assert valid(schema, endpoint(url))
        refused(create_webhook(client, headers, endpoint(url)), "url")


def test_the_secret_pattern_is_exactly_what_signing_decodes_without_stray_padding():
    pattern = re.compile(SECRET)
    for length in range(20, 95):
        encoded = (BASE64 * 2)[:length]
        for padding in ("", "=", "==", "==="):
            secret = "whsec_" + encoded + padding
            try:
                decode_secret(secret)
                decodes = True
            except ValueError:
                decodes = False
            due = -length % 4
            canonical = padding == "" or (length % 4 in (2, 3) and len(padding) <= due)
            assert bool(pattern.fullmatch(secret)) == (decodes and canonical), (length, padding)


@pytest.mark.parametrize("inside, outside", [(0, -1), (720, 721)])
def test_grace_period_bounds(client, tenant, document, inside, outside):
    _, headers = tenant
    hook = create_webhook(client, headers, endpoint()).json()["data"]
    path = WEBHOOKS + "/{id}/rotate-secret"
    schema = body_schema(document, "POST", path)
    assert valid(schema, {"grace_period_hours": inside}) and not valid(schema, {"grace_period_hours": outside})
    r = client.post(f"/webhooks/{hook['id']}/rotate-secret", json={"grace_period_hours": inside}, headers=headers)
    conforms(document, "POST", path, r)
    r = client.post(f"/webhooks/{hook['id']}/rotate-secret", json={"grace_period_hours": outside}, headers=headers)
    refused(r, "grace_period_hours")
    conforms(document, "POST", path, client.post(f"/webhooks/{hook['id']}/rotate-secret", headers=headers))


def test_webhook_reads_and_updates_match_their_answers(client, tenant, document):
    _, headers = tenant
    hook = create_webhook(client, headers, endpoint()).json()["data"]
    conforms(document, "GET", WEBHOOKS + "/{id}", client.get(f"/webhooks/{hook['id']}", headers=headers))
    r = client.patch(f"/webhooks/{hook['id']}", json={"is_active": False, "events": ["seo.*"]}, headers=headers)
    assert conforms(document, "PATCH", WEBHOOKS + "/{id}", r)["data"]["is_active"] is False
    listed = conforms(document, "GET", WEBHOOKS, client.get("/webhooks", headers=headers))
    assert [w["id"] for w in listed["data"]] == [hook["id"]]
    chosen = client.get("/webhooks", params={"fields": "id,consecutive_failures,updated_at"}, headers=headers)
    assert set(conforms(document, "GET", WEBHOOKS, chosen)["data"][0]) == {"id", "consecutive_failures", "updated_at"}
    deliveries = client.get(f"/webhooks/{hook['id']}/deliveries", headers=headers)
    conforms(document, "GET", WEBHOOKS + "/{id}/deliveries", deliveries)


def test_retrying_a_delivery_of_a_disabled_endpoint_is_a_409_conflict(client, tenant, tenants):
    _, headers = tenant
    hook = create_webhook(client, headers, endpoint()).json()["data"]
    assert client.patch(f"/webhooks/{hook['id']}", json={"is_active": False}, headers=headers).status_code == 200
    delivery_id = tenants.fetchval(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, body, status, attempt) "
        "VALUES ($1, 'evt_contract', 'webhook.test', '{}', 'failed', 1) RETURNING id",
        hook["id"],
    )
    r = client.post(f"/webhooks/{hook['id']}/deliveries/{delivery_id}/retry", headers=headers)
    assert r.status_code == 409 and r.json()["error"] == "cannot_retry", r.text


# --- SEO ------------------------------------------------------------------------------------


def report(**changes) -> dict:
    return {**REPORT, **changes}


def issue(**extra) -> dict:
    return {"type": "missing_alt", "severity": "warning", **extra}


@pytest.mark.parametrize(
    "field, inside, outside",
    [
        ("url", report(url="http://example.com/" + "a" * 2029), report(url="http://example.com/" + "a" * 2030)),
        ("url", report(url="https://example.com:8443/p?q=1#top"), report(url="https://exa mple.com/")),
        ("scores.seo", report(scores={**SCORES, "seo": 100}), report(scores={**SCORES, "seo": 101})),
        ("scores.seo", report(scores={**SCORES, "seo": 0}), report(scores={**SCORES, "seo": -1})),
        ("issues", report(issues=[issue()] * 1000), report(issues=[issue()] * 1001)),
        ("issues.0.type", report(issues=[issue(type="t" * 100)]), report(issues=[issue(type="t" * 101)])),
        (
            "issues.0.element",
            report(issues=[issue(element="e" * 1000)]),
            report(issues=[issue(element="e" * 1001)]),
        ),
        (
            "issues.0.note",
            report(issues=[issue(note="n" * 1000, line=3, ok=True, gone=None)]),
            report(issues=[issue(note="n" * 1001)]),
        ),
        ("issues.0.note", report(issues=[issue(note="plain")]), report(issues=[issue(note={"deep": 1})])),
        (
            "issues.0",
            report(issues=[issue(**{f"k{n}": n for n in range(18)})]),
            report(issues=[issue(**{f"k{n}": n for n in range(19)})]),
        ),
        ("issues.0", report(issues=[issue(**{"k" * 100: 1})]), report(issues=[issue(**{"k" * 101: 1})])),
    ],
)
def test_seo_report_limits_are_accepted_inside_and_refused_outside(client, tenant, document, field, inside, outside):
    _, headers = tenant
    schema = body_schema(document, "POST", "/api/v1/seo/report")
    assert valid(schema, inside) and not valid(schema, outside)
    created = conforms(document, "POST", "/api/v1/seo/report", client.post("/seo/report", json=inside, headers=headers))
    refused(client.post("/seo/report", json=outside, headers=headers), field)
    got = client.get(f"/seo/reports/{created['data']['id']}", headers=headers)
    assert conforms(document, "GET", "/api/v1/seo/reports/{id}", got) == {"data": created["data"]}


def test_seo_history_query_is_declared_and_enforced(client, tenant, document):
    ws, headers = tenant
    client.post("/seo/report", json=REPORT, headers=headers)
    parameters = {p["name"]: p for p in operation(document, "GET", "/api/v1/seo/history")["parameters"]}
    assert parameters["url"]["required"] is True and parameters["limit"]["schema"]["maximum"] == 500
    refused(client.get("/seo/history", headers=headers), "url")
    for name, value in (("limit", "501"), ("limit", "0"), ("since", "1969-12-31"), ("before", "2026-02-30")):
        refused(client.get("/seo/history", params={"url": REPORT["url"], name: value}, headers=headers), name)
    query = {"url": REPORT["url"], "limit": "500", "since": "1970-01-01", "before": "9999-12-31T23:59:59Z"}
    body = conforms(document, "GET", "/api/v1/seo/history", client.get("/seo/history", params=query, headers=headers))
    assert len(body["data"]["history"]) == 1


def test_seo_lists_match_their_answers_and_an_unknown_severity_matches_nothing(client, tenant, document):
    ws, headers = tenant
    client.post("/seo/report", json=REPORT, headers=headers)
    path = "/api/v1/seo/issues/{workspace_id}"
    listed = conforms(document, "GET", path, client.get(f"/seo/issues/{ws['id']}", headers=headers))
    assert listed["meta"]["total"] == 2
    # severity is a text filter in the document: a value no issue has is a valid filter matching none.
    none = client.get(f"/seo/issues/{ws['id']}", params={"severity": "fatal", "report_id": "x"}, headers=headers)
    assert conforms(document, "GET", path, none)["meta"]["total"] == 0
    reports = conforms(document, "GET", "/api/v1/seo/reports", client.get("/seo/reports", headers=headers))
    assert reports["meta"]["total"] == 1


# --- MCP ------------------------------------------------------------------------------------


def test_mcp_servers_are_paginated(client, tenant, document):
    _, headers = tenant
    path = "/api/v1/mcp/servers"
    first = conforms(document, "GET", path, client.get("/mcp/servers", headers=headers))
    assert [s["id"] for s in first["data"]] == ["filesystem", "analytics"]
    assert first["meta"] == {"current_page": 1, "from": 1, "last_page": 1, "per_page": 25, "to": 2, "total": 2}
    second = conforms(document, "GET", path, client.get("/mcp/servers?per_page=1&page=2", headers=headers))
    assert [s["id"] for s in second["data"]] == ["analytics"] and second["links"]["next"] is None
    assert second["links"]["prev"].endswith("/api/v1/mcp/servers?per_page=1&page=1")
    past = conforms(document, "GET", path, client.get("/mcp/servers?page=3", headers=headers))
    assert past["data"] == [] and past["meta"]["from"] is None
    maximum = {"per_page": 100, "page": 1_000_000}  # app/http/listing.py's, and its message
    for name, value in (("per_page", "0"), ("per_page", "101"), ("page", "0"), ("page", "1000001")):
        r = client.get("/mcp/servers", params={name: value}, headers=headers)
        refused(r, name)
        assert r.json()["errors"][name] == [f"The {name} must be an integer between 1 and {maximum[name]}."]
    refused(client.get("/mcp/servers?page=1&page=2", headers=headers), "page")


def test_mcp_tools_are_paginated(client, tenant, document):
    _, headers = tenant
    path = "/api/v1/mcp/servers/{id}/tools"
    body = conforms(
        document, "GET", path, client.get("/mcp/servers/filesystem/tools?per_page=2&page=2", headers=headers)
    )
    assert [t["name"] for t in body["data"]] == ["list_directory"] and body["meta"]["total"] == 3
    refused(client.get("/mcp/servers/filesystem/tools?per_page=101", headers=headers), "per_page")
    conforms(document, "GET", "/api/v1/mcp/servers/{id}", client.get("/mcp/servers/analytics", headers=headers))


def test_tools_call_is_documented_tool_by_tool_and_enforced_so(client, tenant, document):
    _, headers = tenant
    schema = body_schema(document, "POST", "/api/v1/mcp/tools/call")
    branches = {(b["properties"]["server"]["const"], b["properties"]["tool"]["const"]) for b in schema["oneOf"]}
    assert ("filesystem", "read_file") in branches and ("analytics", "feature_usage") in branches
    listing = {"server": "filesystem", "tool": "list_directory", "arguments": {}}
    assert valid(schema, listing)
    r = client.post("/mcp/tools/call", json=listing, headers=headers)
    assert conforms(document, "POST", "/api/v1/mcp/tools/call", r)["result"]["path"] == ""
    for body, field in (
        ({"server": "filesystem", "tool": "read_file"}, "arguments.path"),
        ({"server": "filesystem", "tool": "read_file", "arguments": {"path": "a/../b"}}, "arguments.path"),
        ({"server": "analytics", "tool": "event_counts", "arguments": {"start": "1969-12-31"}}, "arguments.start"),
        ({"server": "analytics", "tool": "top_pages", "arguments": {"limit": 0}}, "arguments.limit"),
        ({"server": "filesystem", "tool": "list_directory", "arguments": [], "x": 1}, "x"),
    ):
        assert not valid(schema, body)
        refused(client.post("/mcp/tools/call", json=body, headers=headers), field)
