"""The pipeline and its readers in server mode: pixel events and usage records over HTTP → Kafka →
the ingest worker's INSERTs over HTTP → ClickHouse rows, read back through the server; then the
Stats API, the MCP analytics tools, `python -m app counters` and `python -m ingest query`, each
answering what those rows say."""

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis

from app.cli.counters import period_bounds
from storage.postgres import domains
from storage.redis.quota import counter_key
from tests.conftest import ROOT
from tests.e2e.test_counters import drift_rows, summary_used
from tests.e2e.test_ingestion import CHROME, event, site
from tests.server_mode.conftest import event_counts, wait_for_events, wait_until

SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
FIELDS = (
    "path, host, event, utm_source, utm_campaign, referrer_host, browser, os, device, properties, source, ip_prefix"
)


def test_tracked_events_land_once_with_their_fields(server_api, tenants, server_query):
    ws, host = site(tenants)
    ua = {"User-Agent": CHROME}
    for n in range(3):
        r = server_api.post("/pixel/track", json=event(host, n), headers=ua)
        assert r.status_code == 200 and r.json() == {"tracked": True}, r.text
    beacon = {**ua, "Content-Type": "text/plain;charset=UTF-8"}
    assert server_api.post("/pixel/track", content=orjson.dumps(event(host, 3)), headers=beacon).status_code < 300
    r = server_api.get("/pixel/track", params={"event": "pageview", "url": f"https://{host}/noscript"}, headers=ua)
    assert r.status_code == 200 and r.content[:6] == b"GIF89a"
    r = server_api.post("/pixel/track", json=[event(host, n, name="signup") for n in range(10, 15)], headers=ua)
    assert r.status_code == 200 and r.json()["accepted"] == 5, r.text

    wait_for_events(server_query, ws["id"], 10)
    assert event_counts(server_query, ws["id"]) == (10, 10, 10)
    rows = server_query(f"SELECT {FIELDS} FROM events WHERE workspace_id = {{ws:UInt64}}", {"ws": ws["id"]})
    by_path = {row[0]: dict(zip(FIELDS.split(", "), row, strict=True)) for row in rows}
    assert set(by_path) == {"/page/0", "/page/1", "/page/2", "/page/3", "/noscript"} | {
        f"/page/{n}" for n in range(10, 15)
    }
    first = by_path["/page/0"]
    assert (first["host"], first["event"], first["utm_source"], first["utm_campaign"]) == (
        host,
        "pageview",
        "news",
        "launch",
    )
    assert (first["referrer_host"], first["browser"], first["os"], first["device"]) == (
        "www.google.com",
        "Chrome",
        "Windows",
        "desktop",
    )
    assert orjson.loads(first["properties"]) == {"n": 0}
    assert by_path["/page/12"]["event"] == "signup" and orjson.loads(by_path["/page/12"]["properties"]) == {"n": 12}
    assert {r["source"] for r in by_path.values()} == {"json", "beacon", "gif", "batch"}
    assert {r["ip_prefix"] for r in by_path.values()} == {"127.0.0.0"}


def enterprise(tenants) -> tuple[dict, dict]:
    ws = tenants.workspace(tier="enterprise")
    return ws, {"Authorization": f"Bearer {tenants.key(ws['id'], tier='enterprise')}"}


def record(client, headers: dict, feature: str, quantity: int) -> None:
    r = client.post("/entitlements/usage", json={"feature": feature, "quantity": quantity}, headers=headers)
    assert r.status_code == 200 and r.json()["recorded"] is True, r.text


def usage_rows(query, workspace_id: int) -> list[tuple]:
    return query(
        "SELECT feature, quantity FROM usage_events WHERE workspace_id = {ws:UInt64} ORDER BY feature, quantity",
        {"ws": workspace_id},
    )


def test_usage_records_land_as_usage_rows(server_api, tenants, server_query):
    ws, headers = enterprise(tenants)
    for feature, quantity in (("api_calls", 4), ("seo_reports", 3), ("api_calls", 2)):
        record(server_api, headers, feature, quantity)
    wait_until("3 usage rows", lambda: len(usage_rows(server_query, ws["id"])) >= 3)
    assert usage_rows(server_query, ws["id"]) == [("api_calls", 2), ("api_calls", 4), ("seo_reports", 3)]


# --- the read paths, over one site's events --------------------------------------------------


@pytest.fixture(scope="module")
def read_site(server_api, tenants, server_query):
    """Visitor A (Chrome) views / and /pricing and signs up; visitor B (iPhone) views /; the
    workspace also used 5 api_calls, another one 100. Returns (workspace, site, headers) once all
    of it is stored."""
    ws, headers = enterprise(tenants)
    host = f"reads-{uuid.uuid4().hex[:8]}.example"
    tenants.run(lambda pool: domains.create_domain(pool, ws["id"], host, {}))
    now = datetime.now(UTC)

    def at(seconds: int) -> str:
        return (now - timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    visits = [
        ("192.0.2.10", CHROME, [("pageview", "/", 150), ("pageview", "/pricing", 90), ("signup", "/pricing", 30)]),
        ("198.51.100.20", SAFARI_IPHONE, [("pageview", "/", 60)]),
    ]
    for address, agent, events in visits:
        batch = [{"event": name, "url": f"https://{host}{path}", "timestamp": at(ago)} for name, path, ago in events]
        r = server_api.post("/pixel/track", json=batch, headers={"X-Forwarded-For": address, "User-Agent": agent})
        assert r.status_code == 200 and r.json()["accepted"] == len(batch), r.text
    record(server_api, headers, "api_calls", 5)
    other, theirs = enterprise(tenants)  # in the same database: no reader of ws may count it
    record(server_api, theirs, "api_calls", 100)
    wait_for_events(server_query, ws["id"], 4)
    wait_until(
        "the usage rows", lambda: len(usage_rows(server_query, ws["id"]) + usage_rows(server_query, other["id"])) >= 2
    )
    return ws, host, headers


def stats(client, headers: dict, host: str, metrics: list[str], **fields) -> list[tuple]:
    body = {"site": host, "metrics": metrics, "date_range": "7d", **fields}
    r = client.post("/stats/query", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return [(tuple(row["dimensions"]), tuple(row["metrics"])) for row in r.json()["results"]]


def test_stats_api_answers_what_the_rows_say(server_api, read_site, server_query):
    ws, host, headers = read_site
    p = {"ws": ws["id"]}
    total = server_query(
        "SELECT uniqExact(visitor_id), uniqExact(session_id), countIf(event = 'pageview'), count() "
        "FROM events WHERE workspace_id = {ws:UInt64}",
        p,
    )[0]
    assert total == (2, 2, 3, 4)
    assert stats(server_api, headers, host, ["visitors", "visits", "pageviews", "events"]) == [((), total)]

    pages = server_query(
        "SELECT path, countIf(event = 'pageview'), uniqExact(visitor_id) FROM events "
        "WHERE workspace_id = {ws:UInt64} GROUP BY path ORDER BY path",
        p,
    )
    assert pages == [("/", 2, 2), ("/pricing", 1, 1)]
    by_page = stats(server_api, headers, host, ["pageviews", "visitors"], dimensions=["event:page"])
    assert sorted(by_page) == [((path,), (views, visitors)) for path, views, visitors in pages]

    days = server_query(
        "SELECT toString(toDate(time)), uniqExact(visitor_id), count() FROM events "
        "WHERE workspace_id = {ws:UInt64} GROUP BY 1 ORDER BY 1",
        p,
    )
    by_day = stats(server_api, headers, host, ["visitors", "events"], dimensions=["time:day"])
    assert by_day == [((day,), (visitors, events)) for day, visitors, events in days]

    names = server_query(
        "SELECT event, count() FROM events WHERE workspace_id = {ws:UInt64} GROUP BY event ORDER BY event", p
    )
    assert stats(server_api, headers, host, ["events"], dimensions=["event:name"]) == [
        ((name,), (count,)) for name, count in names
    ]


def tool(client, headers: dict, name: str, arguments: dict) -> dict:
    r = client.post(
        "/mcp/tools/call", json={"server": "analytics", "tool": name, "arguments": arguments}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_mcp_analytics_tools_answer_what_the_rows_say(server_api, read_site, server_query):
    ws, host, headers = read_site
    p = {"ws": ws["id"]}
    names = server_query(
        "SELECT event, count() FROM events WHERE workspace_id = {ws:UInt64} GROUP BY event ORDER BY event", p
    )
    counts = tool(server_api, headers, "event_counts", {"site": host})["rows"]
    assert sorted((row["event"], row["events"]) for row in counts) == names == [("pageview", 3), ("signup", 1)]
    pages = tool(server_api, headers, "top_pages", {"site": host})["rows"]
    assert pages == [{"path": "/", "events": 2, "visitors": 2}, {"path": "/pricing", "events": 1, "visitors": 1}]
    usage = server_query(
        "SELECT feature, sum(quantity), count() FROM usage_events WHERE workspace_id = {ws:UInt64} GROUP BY feature",
        p,
    )
    assert usage == [("api_calls", 5, 1)]
    rows = tool(server_api, headers, "feature_usage", {})["rows"]
    assert [(row["feature"], row["quantity"], row["records"]) for row in rows] == usage


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_counters_read_metered_usage_from_the_server(server_api, read_site, pipeline):
    ws, _, headers = read_site
    drift = cli(pipeline, "app", "counters", "drift", "--workspace-id", str(ws["id"]), "--all")
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert drift_rows(drift.stdout, ws["id"])["api_calls"] == ("5", "5", "+0")

    period = period_bounds(datetime.now(UTC))[0]
    with redis.Redis.from_url(pipeline["REDIS_URL"]) as r:
        assert r.delete(counter_key(ws["id"], "api_calls", period)) == 1
    lost = cli(pipeline, "app", "counters", "drift", "--workspace-id", str(ws["id"]))
    assert lost.returncode == 1 and drift_rows(lost.stdout, ws["id"])["api_calls"] == ("-", "5", "-5"), lost.stdout
    rebuilt = cli(pipeline, "app", "counters", "rebuild", "--workspace-id", str(ws["id"]))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert summary_used(server_api, headers)["api_calls"] == 5


def test_ingest_query_reads_the_server_of_the_url(read_site, pipeline):
    ws, _, _ = read_site
    sql = f"SELECT event, count() FROM events WHERE workspace_id = {ws['id']} GROUP BY event ORDER BY event"
    answer = cli(pipeline, "ingest", "query", sql, "--format", "CSV")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == '"pageview",3\n"signup",1\n'
    # A server runs whatever it is sent: the command asks it for read-only, so a write is refused.
    write = cli(pipeline, "ingest", "query", "CREATE TABLE query_probe (a Int8) ENGINE = Memory")
    assert write.returncode == 1 and "readonly" in write.stderr.lower(), (write.returncode, write.stderr)
    tables = cli(pipeline, "ingest", "query", "SELECT count() FROM system.tables WHERE name = 'query_probe'")
    assert tables.stdout.strip() == "0", tables.stderr
