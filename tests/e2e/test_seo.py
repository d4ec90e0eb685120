"""SEO reports over HTTP: validation field by field, one workspace's issues only, listing filters,
one report with its issues, and a URL's score history."""

from datetime import UTC, datetime, timedelta

import pytest

SCORES = {"performance": 85, "accessibility": 92, "best_practices": 88, "seo": 95}
REPORT = {
    "url": "https://example.com/page",
    "scores": SCORES,
    "issues": [
        {"type": "missing_alt", "severity": "warning", "element": "img.hero-image"},
        {"type": "missing_title", "severity": "error", "element": "head", "message": "No <title>"},
    ],
}


def submit(client, headers, report=REPORT):
    r = client.post("/seo/report", json=report, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["data"]


def test_submitted_report_is_stored_with_its_issues(client, tenant):
    ws, headers = tenant
    data = submit(client, headers)
    assert data["url"] == REPORT["url"] and data["scores"] == SCORES and data["workspace_id"] == ws["id"]
    assert [(i["issue_type"], i["severity"]) for i in data["issues"]] == [
        ("missing_alt", "warning"),
        ("missing_title", "error"),
    ]
    assert data["issues"][1]["details"] == {"element": "head", "message": "No <title>"}
    got = client.get(f"/seo/reports/{data['id']}", headers=headers).json()["data"]
    assert got == data


def test_a_submitted_report_emits_seo_report_created_in_the_outbox(client, tenant, tenants):
    ws, headers = tenant
    data = submit(client, headers)
    row = tenants.run(
        lambda pool: pool.fetchrow(
            "SELECT event_id, payload FROM outbox WHERE event_type = 'seo.report.created' AND workspace_id = $1",
            ws["id"],
        )
    )
    assert row is not None and row["event_id"].startswith("evt_")
    assert str(data["id"]) in str(row["payload"])


def test_an_invalid_report_emits_no_event(client, tenant, tenants):
    ws, headers = tenant
    assert client.post("/seo/report", json={"url": "ftp://x/"}, headers=headers).status_code == 422
    assert (
        tenants.fetchval(
            "SELECT count(*) FROM outbox WHERE event_type = 'seo.report.created' AND workspace_id = $1", ws["id"]
        )
        == 0
    )


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, {"url", "scores"}),
        ({"url": "ftp://example.com/", "scores": SCORES}, {"url"}),
        ({"url": "https://", "scores": SCORES}, {"url"}),
        ({"url": "https://example.com/" + "a" * 2100, "scores": SCORES}, {"url"}),
        ({"url": "https://example.com/", "scores": {**SCORES, "speed": 3}}, {"scores.speed"}),
        ({"url": "https://example.com/", "scores": {**SCORES, "seo": 101}}, {"scores.seo"}),
        (
            {"url": "https://example.com/", "scores": {**SCORES, "performance": -1, "accessibility": 9.5}},
            {"scores.performance", "scores.accessibility"},
        ),
        ({"url": "https://example.com/", "scores": {**SCORES, "best_practices": "90"}}, {"scores.best_practices"}),
        (
            {"url": "https://example.com/", "scores": {"seo": 90}},
            {"scores.performance", "scores.accessibility", "scores.best_practices"},
        ),
        ({"url": "https://example.com/", "scores": SCORES, "issues": {"type": "x"}}, {"issues"}),
        (
            {
                "url": "https://example.com/",
                "scores": SCORES,
                "issues": [{"type": "x", "severity": "fatal"}, {"severity": "info"}, "oops"],
            },
            {"issues.0.severity", "issues.1.type", "issues.2"},
        ),
        ({"url": "https://example.com/", "scores": SCORES, "extra": 1}, {"extra"}),
    ],
)
def test_invalid_report_returns_422_per_field(client, tenant, body, fields):
    _, headers = tenant
    r = client.post("/seo/report", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert set(r.json()["errors"]) == fields


def test_invalid_report_stores_nothing(client, tenant, tenants):
    ws, headers = tenant
    bad = {**REPORT, "issues": REPORT["issues"] + [{"type": "x", "severity": "nope"}]}
    assert client.post("/seo/report", json=bad, headers=headers).status_code == 422
    assert tenants.fetchval("SELECT count(*) FROM seo_reports WHERE workspace_id = $1", ws["id"]) == 0


def test_issues_of_another_workspace_are_refused(client, tenant, tenants):
    _, headers = tenant
    other = tenants.workspace()
    submit(client, {"Authorization": f"Bearer {tenants.key(other['id'])}"})
    r = client.get(f"/seo/issues/{other['id']}", headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "access_denied"


def test_report_of_another_workspace_is_not_found(client, tenant, tenants):
    _, headers = tenant
    other = tenants.workspace()
    data = submit(client, {"Authorization": f"Bearer {tenants.key(other['id'])}"})
    assert client.get(f"/seo/reports/{data['id']}", headers=headers).status_code == 404


def test_scopes_are_required(client, tenants):
    ws = tenants.workspace()
    reader = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['seo:read'])}"}
    assert client.post("/seo/report", json=REPORT, headers=reader).status_code == 403
    writer = {"Authorization": f"Bearer {tenants.key(ws['id'], scopes=['seo:write'])}"}
    assert client.get(f"/seo/issues/{ws['id']}", headers=writer).status_code == 403


def test_issue_listing_filters_and_paginates(client, tenant):
    ws, headers = tenant
    submit(client, headers)
    submit(
        client,
        headers,
        {
            **REPORT,
            "url": "https://example.com/other",
            "issues": [{"type": "missing_alt", "severity": "warning", "element": "img.logo"}],
        },
    )
    base = f"/seo/issues/{ws['id']}"
    body = client.get(base, params={"severity": "warning"}, headers=headers).json()
    assert body["meta"]["total"] == 2 and {i["severity"] for i in body["data"]} == {"warning"}
    body = client.get(base, params={"issue_type": "missing_title"}, headers=headers).json()
    assert [i["url"] for i in body["data"]] == ["https://example.com/page"]
    body = client.get(base, params={"url": "https://example.com/other"}, headers=headers).json()
    assert [i["details"]["element"] for i in body["data"]] == ["img.logo"]
    body = client.get(base, params={"per_page": 1, "page": 2, "sort": "-id"}, headers=headers).json()
    assert body["meta"]["total"] == 3 and body["meta"]["last_page"] == 3 and len(body["data"]) == 1
    assert body["links"]["next"] is not None and body["links"]["prev"] is not None


def test_issue_listing_date_range(client, tenant):
    ws, headers = tenant
    submit(client, headers)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    base = f"/seo/issues/{ws['id']}"
    assert client.get(base, params={"created_after": future}, headers=headers).json()["meta"]["total"] == 0
    assert (
        client.get(base, params={"created_after": past, "created_before": future}, headers=headers).json()["meta"][
            "total"
        ]
        == 2
    )


def test_issue_listing_refuses_an_unknown_sort_and_an_unknown_severity_matches_nothing(client, tenant):
    ws, headers = tenant
    submit(client, headers)
    r = client.get(f"/seo/issues/{ws['id']}", params={"severity": "fatal", "sort": "colour"}, headers=headers)
    assert r.status_code == 422 and set(r.json()["errors"]) == {"sort"}
    r = client.get(f"/seo/issues/{ws['id']}", params={"severity": "fatal"}, headers=headers)
    assert r.status_code == 200 and r.json()["meta"]["total"] == 0


def test_score_history_lists_a_urls_reports_newest_first(client, tenant):
    _, headers = tenant
    first = submit(client, headers)
    second = submit(client, headers, {**REPORT, "scores": {**SCORES, "seo": 60}, "issues": []})
    submit(client, headers, {**REPORT, "url": "https://example.com/elsewhere"})
    body = client.get("/seo/history", params={"url": REPORT["url"]}, headers=headers).json()["data"]
    assert body["url"] == REPORT["url"]
    assert [p["report_id"] for p in body["history"]] == [second["id"], first["id"]]
    assert [p["scores"]["seo"] for p in body["history"]] == [60, 95]
    r = client.get("/seo/history", params={"url": "mailto:x@example.com", "limit": "0"}, headers=headers)
    assert r.status_code == 422 and set(r.json()["errors"]) == {"url", "limit"}


def test_report_listing_filters_by_url(client, tenant):
    _, headers = tenant
    submit(client, headers)
    submit(client, headers, {**REPORT, "url": "https://example.com/b"})
    body = client.get("/seo/reports", params={"url": "https://example.com/b"}, headers=headers).json()
    assert body["meta"]["total"] == 1 and "issues" not in body["data"][0]
    assert body["data"][0]["scores"] == SCORES
