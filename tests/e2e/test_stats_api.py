"""POST /api/v1/stats/query over HTTP against the real stack: events sent through the pixel, through
Kafka and the ingest worker into ClickHouse, read back through the route — every metric, a
dimension of each family, each filter operator, date ranges in the workspace's time zone, CSV,
pagination, the 4xx answers, the time budget's 429, and the MCP tools that run on the same planner.
"""

import csv
import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from app.access.scopes import ALL_SCOPES
from storage.postgres import domains
from tests.conftest import running_api
from tests.e2e.test_enrichment import CHROME_WINDOWS, GOOGLEBOT, SAFARI_IPHONE
from tests.geo_fixture import build_city_db

WAIT = 120


@pytest.fixture(scope="module")
def stats_api(server_env, ingest_worker, tmp_path_factory):
    """An API behind a trusted proxy (127.0.0.1), placing visitors with the test .mmdb."""
    directory = tmp_path_factory.mktemp("stats")
    env = {
        **server_env,
        "SLUICE_GEOIP_DB": str(build_city_db(directory / "city.mmdb")),
        "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
    }
    with running_api(env, directory) as url, httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
        yield c


def register(tenants, workspace_id: int) -> str:
    host = f"stats-{uuid.uuid4().hex[:8]}.example"
    tenants.run(lambda pool: domains.create_domain(pool, workspace_id, host, {}))
    return host


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def track(client: httpx.Client, events: list[dict], address: str, agent: str = CHROME_WINDOWS) -> dict:
    r = client.post("/pixel/track", json=events, headers={"X-Forwarded-For": address, "User-Agent": agent})
    assert r.status_code == 200, r.text
    return r.json()


def query(client: httpx.Client, headers: dict, body: dict, **extra) -> httpx.Response:
    return client.post("/stats/query", json=body, headers={**headers, **extra})


def ask(client, headers, site: str, metrics: list[str], **fields) -> dict:
    r = query(
        client, headers, {"site": site, "metrics": metrics, "date_range": fields.pop("date_range", "7d"), **fields}
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(client, headers, site: str, **expected) -> None:
    """Until the site's metrics (by name) are the expected figures: every event sent has landed."""
    deadline = time.monotonic() + WAIT
    while True:
        found = ask(client, headers, site, list(expected))["results"][0]["metrics"]
        if found == list(expected.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found == list(expected.values())


@pytest.fixture(scope="module")
def site(stats_api, tenants):
    """A workspace (UTC) with one site and its events: visitor A (Germany, Chrome) lands on / from a
    newsletter, views /pricing and signs up on the plan "pro"; visitor B (US, iPhone) views / and
    leaves; a bot is dropped. Returns (site, headers)."""
    ws = tenants.workspace()
    host = register(tenants, ws["id"])
    now = datetime.now(UTC)
    answer = track(
        stats_api,
        [
            {
                "event": "pageview",
                "url": f"https://{host}/?utm_source=news",
                "timestamp": stamp(now - timedelta(seconds=150)),
            },
            {"event": "pageview", "url": f"https://{host}/pricing", "timestamp": stamp(now - timedelta(seconds=90))},
            {
                "event": "signup",
                "url": f"https://{host}/pricing",
                "properties": {"plan": "pro"},
                "timestamp": stamp(now - timedelta(seconds=30)),
            },
        ],
        "192.0.2.10",
    )
    assert answer["accepted"] == 3, answer
    track(stats_api, [{"event": "pageview", "url": f"https://{host}/"}], "198.51.100.20", SAFARI_IPHONE)
    assert track(stats_api, [{"event": "pageview", "url": f"https://{host}/"}], "192.0.2.11", GOOGLEBOT)["dropped"] == 1
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    wait_for(stats_api, headers, host, events=4, visits=2)
    return host, headers


def rows(answer: dict) -> list[tuple]:
    return [(tuple(r["dimensions"]), tuple(r["metrics"])) for r in answer["results"]]


def test_every_metric_over_the_site(stats_api, site):
    host, headers = site
    answer = ask(
        stats_api,
        headers,
        host,
        ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit"],
    )
    assert answer["results"] == [{"dimensions": [], "metrics": [2, 2, 3, 4, 50.0, 60.0, 1.5]}]
    assert answer["meta"]["time_zone"] == "UTC" and answer["meta"]["source"] in ("rollup", "events")
    today = datetime.now(UTC).date()
    assert answer["query"]["site"] == host
    assert answer["query"]["date_range"] == [(today - timedelta(days=6)).isoformat(), today.isoformat()]
    goal = ask(stats_api, headers, host, ["conversion_rate", "visitors"], filters=[["is", "event:goal", ["signup"]]])
    assert goal["results"][0]["metrics"] == [50.0, 1]


def test_a_dimension_of_each_family(stats_api, site):
    host, headers = site
    by_name = ask(stats_api, headers, host, ["events"], dimensions=["event:name"])
    assert rows(by_name) == [(("pageview",), (3,)), (("signup",), (1,))]
    by_page = ask(stats_api, headers, host, ["pageviews", "visitors"], dimensions=["event:page"])
    assert rows(by_page) == [(("/",), (2, 2)), (("/pricing",), (1, 1))]
    by_source = ask(stats_api, headers, host, ["visitors"], dimensions=["visit:utm_source"])
    assert sorted(rows(by_source)) == [(("",), (1,)), (("news",), (1,))]
    by_country = ask(stats_api, headers, host, ["visitors", "visits"], dimensions=["visit:country"])
    assert sorted(rows(by_country)) == [(("DE",), (1, 1)), (("US",), (1, 1))]
    by_browser = ask(stats_api, headers, host, ["visitors"], dimensions=["visit:browser", "visit:device"])
    assert sorted(rows(by_browser)) == [(("Chrome", "desktop"), (1,)), (("Mobile Safari", "mobile"), (1,))]
    today = datetime.now(UTC).date().isoformat()
    by_day = ask(stats_api, headers, host, ["visitors", "events"], dimensions=["time:day"])
    assert rows(by_day) == [((today,), (2, 4))]
    plans = ask(
        stats_api, headers, host, ["events"], dimensions=["property:plan"], filters=[["is", "event:name", ["signup"]]]
    )
    assert rows(plans) == [(("pro",), (1,))]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([["is", "visit:country", ["DE"]]], [1, 3]),
        ([["is", "visit:country", ["DE", "US"]]], [2, 4]),
        ([["is_not", "visit:country", ["DE"]]], [1, 1]),
        ([["contains", "event:page", ["pric"]]], [1, 2]),
        ([["contains_not", "event:page", ["pric"]]], [2, 2]),
        ([["matches", "event:page", ["^/$"]]], [2, 2]),
        ([["matches_not", "event:page", ["^/$"]]], [1, 2]),
        ([["is", "visit:country", ["DE"]], ["is", "event:name", ["pageview"]]], [1, 2]),
        ([["or", [["is", "visit:country", ["US"]], ["is", "event:name", ["signup"]]]]], [2, 2]),
        ([["not", ["is", "visit:country", ["DE"]]]], [1, 1]),
        ([["is", "property:plan", ["pro"]]], [1, 1]),
    ],
)
def test_each_filter_operator(stats_api, site, filters, expected):
    host, headers = site
    answer = ask(stats_api, headers, host, ["visitors", "events"], filters=filters)
    assert answer["results"][0]["metrics"] == expected
    assert answer["query"]["filters"] == filters


def test_named_and_explicit_date_ranges(stats_api, site):
    host, headers = site
    for named in ("day", "7d", "30d", "month", "year", "all"):
        assert ask(stats_api, headers, host, ["events"], date_range=named)["results"][0]["metrics"] == [4], named
    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    explicit = ask(stats_api, headers, host, ["events"], date_range=[today.isoformat(), today.isoformat()])
    assert explicit["results"][0]["metrics"] == [4]
    before = ask(stats_api, headers, host, ["events"], date_range=["2020-01-01", yesterday])
    assert before["results"][0]["metrics"] == [0]
    assert before["query"]["date_range"] == ["2020-01-01", yesterday]
    month = ask(stats_api, headers, host, ["events"], date_range="month")["query"]["date_range"]
    assert month[0] == today.replace(day=1).isoformat() and month[1] >= today.isoformat()


def test_days_are_the_workspace_s_time_zone(stats_api, client, tenants):
    """Of UTC+14 and UTC-12 one is always on another date than UTC: that one is the workspace's."""
    now = datetime.now(UTC)
    zone = next(z for z in ("Pacific/Kiritimati", "Etc/GMT+12") if now.astimezone(ZoneInfo(z)).date() != now.date())
    ws = tenants.workspace()
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    r = client.patch(f"/workspaces/{ws['id']}", json={"settings": {"timezone": zone}}, headers=headers)
    assert r.status_code == 200, r.text
    host = register(tenants, ws["id"])
    before = datetime.now(ZoneInfo(zone)).date().isoformat()
    track(stats_api, [{"event": "pageview", "url": f"https://{host}/"}], "192.0.2.20")
    deadline = time.monotonic() + WAIT
    while ask(stats_api, headers, host, ["events"])["results"][0]["metrics"] != [1] and time.monotonic() < deadline:
        time.sleep(0.5)
    answer = ask(stats_api, headers, host, ["events"], dimensions=["time:day"], date_range="day")
    after = datetime.now(ZoneInfo(zone)).date().isoformat()
    assert answer["meta"]["time_zone"] == zone
    [(day,), (count,)] = rows(answer)[0]
    assert day in (before, after) and count == 1 and day != datetime.now(UTC).date().isoformat()
    assert answer["query"]["date_range"] in ([before, before], [after, after])


def test_csv_has_dimensions_then_metrics(stats_api, site):
    host, headers = site
    body = {"site": host, "metrics": ["events", "visitors"], "date_range": "7d", "dimensions": ["event:name"]}
    r = query(stats_api, headers, body, Accept="text/csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(r.text))) == [
        ["event:name", "events", "visitors"],
        ["pageview", "3", "2"],
        ["signup", "1", "1"],
    ]


def test_pagination_order_and_total_rows(stats_api, site):
    host, headers = site
    body = {
        "site_id": host,
        "metrics": ["pageviews"],
        "date_range": "7d",
        "dimensions": ["event:page"],
        "order_by": [["pageviews", "asc"]],
        "pagination": {"limit": 1, "offset": 1},
        "include": {"total_rows": True},
    }
    answer = query(stats_api, headers, body).json()
    assert rows(answer) == [(("/",), (2,))]
    assert answer["meta"]["total_rows"] == 2
    assert answer["query"]["pagination"] == {"limit": 1, "offset": 1}
    first = query(stats_api, headers, {**body, "pagination": {"limit": 1}}).json()
    assert rows(first) == [(("/pricing",), (1,))]


@pytest.fixture(scope="module")
def engaged_site(stats_api, tenants):
    """A site whose pageviews the script measured: visitor A (Germany) reads / for 30 + 12 s down to
    80 %, then /pricing for 5 s to the end; visitor B (US) reads / for 9 s, 20 %, then views / again
    and leaves before any engagement. Returns (site, headers, each pageview's day)."""
    ws = tenants.workspace()
    host = register(tenants, ws["id"])
    now = datetime.now(UTC)

    def at(minutes_ago: float) -> str:
        return stamp(now - timedelta(minutes=minutes_ago))

    def pageview(path: str, pageview_id: str, minutes_ago: float) -> dict:
        properties = {"title": path, "pageview_id": pageview_id}
        return {
            "event": "pageview",
            "url": f"https://{host}{path}",
            "properties": properties,
            "timestamp": at(minutes_ago),
        }

    def engagement(path: str, pageview_id: str, minutes_ago: float, ms: int, depth: int) -> dict:
        properties = {"pageview_id": pageview_id, "engaged_ms": ms, "scroll_depth": depth}
        return {
            "event": "engagement",
            "url": f"https://{host}{path}",
            "properties": properties,
            "timestamp": at(minutes_ago),
        }

    a, b, c, d = "a" * 16, "b" * 16, "c" * 16, "d" * 16
    first = [
        pageview("/", a, 20),
        engagement("/", a, 19, 30_000, 40),
        engagement("/", a, 15, 12_000, 80),
        pageview("/pricing", b, 10),
        engagement("/pricing", b, 9, 5_000, 100),
    ]
    assert track(stats_api, first, "192.0.2.10")["accepted"] == 5
    second = [pageview("/", c, 5), engagement("/", c, 4, 9_000, 20), pageview("/", d, 3)]
    assert track(stats_api, second, "198.51.100.20", SAFARI_IPHONE)["accepted"] == 3
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    # Engagement events are measurements, not events: 4 events (the pageviews) once all 8 have landed.
    wait_for(stats_api, headers, host, events=4, visits=2, time_on_page=18.7, scroll_depth=67)
    days = {pv: (now - timedelta(minutes=m)).date().isoformat() for pv, m in ((a, 20), (b, 10), (c, 5), (d, 3))}
    return host, headers, days


def test_time_on_page_and_scroll_depth_of_measured_pageviews(stats_api, engaged_site):
    host, headers, days = engaged_site
    metrics = ["pageviews", "time_on_page", "scroll_depth"]
    answer = ask(stats_api, headers, host, metrics)
    assert answer["results"] == [{"dimensions": [], "metrics": [4, 18.7, 67]}]  # (42 + 5 + 9) / 3 s, (80+100+20)/3 %
    assert answer["meta"]["source"] == "events"
    by_page = ask(stats_api, headers, host, metrics, dimensions=["event:page"])
    assert rows(by_page) == [(("/",), (3, 25.5, 50)), (("/pricing",), (1, 5.0, 100))]
    by_country = ask(stats_api, headers, host, [*metrics, "visits"], dimensions=["visit:country"])
    assert rows(by_country) == [(("DE",), (2, 23.5, 90, 1)), (("US",), (2, 9.0, 20, 1))]
    pricing = ask(stats_api, headers, host, metrics[1:], filters=[["is", "event:page", ["/pricing"]]])
    assert pricing["results"][0]["metrics"] == [5.0, 100]
    # A day's figures are its pageviews' (the four are minutes apart: one day, or two across midnight).
    measured = {"a" * 16: (42_000, 80), "b" * 16: (5_000, 100), "c" * 16: (9_000, 20)}
    expected = []
    for day in sorted(set(days.values())):
        seen = [measured[pv] for pv, d in days.items() if d == day and pv in measured]
        time_on_page = round(sum(ms for ms, _ in seen) / len(seen) / 1000, 1) if seen else 0.0
        scroll = round(sum(depth for _, depth in seen) / len(seen)) if seen else 0
        expected.append(((day,), (sum(d == day for d in days.values()), time_on_page, scroll)))
    assert rows(ask(stats_api, headers, host, metrics, dimensions=["time:day"])) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"dimensions": ["event:name"]},
        {"filters": [["is", "event:name", ["pageview"]]]},
        {"filters": [["is", "event:goal", ["signup"]]], "metrics": ["conversion_rate", "time_on_page"]},
    ],
)
def test_engagement_metrics_refuse_event_names_and_goals(stats_api, engaged_site, change):
    host, headers, _ = engaged_site
    r = query(stats_api, headers, {"site": host, "metrics": ["time_on_page"], "date_range": "7d", **change})
    assert r.status_code == 422, r.text
    assert "measured on pageviews" in r.json()["errors"]["body"][0]


@pytest.mark.parametrize(
    ("change", "field", "names"),
    [
        ({"metrics": ["visitors", "bounces"]}, "metrics", "visitors, visits"),
        ({"dimensions": ["visit:planet"]}, "dimensions", "visit:country"),
        ({"filters": [["equals", "visit:country", ["DE"]]]}, "filters[0]", "is, is_not, contains"),
        ({"filters": [["is", "time:day", ["2026-01-01"]]]}, "filters[0][1]", "event:goal"),
        ({"order_by": [["events", "desc"]]}, "order_by[0]", "visitors"),
        ({"date_range": "last-week"}, "date_range", "7d"),
        ({"date_range": ["2026-02-02", "2026-02-01"]}, "date_range", "after"),
        ({"site_id": "a.example"}, "site", "exactly one"),
    ],
)
def test_unknown_names_are_422_naming_the_allowed_ones(stats_api, site, change, field, names):
    host, headers = site
    r = query(stats_api, headers, {"site": host, "metrics": ["visitors"], "date_range": "7d", **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_failed" and names in " ".join(r.json()["errors"][field])


def test_queries_the_planner_cannot_serve_are_422(stats_api, site):
    host, headers = site
    for body in (
        {"metrics": ["conversion_rate"]},
        {"metrics": ["visits"], "dimensions": ["event:page"]},
        {"metrics": ["events"], "filters": [["matches", "event:page", ["(unclosed"]]]},
    ):
        r = query(stats_api, headers, {"site": host, "date_range": "7d", **body})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "validation_failed" and r.json()["errors"]["body"]


def test_another_workspace_s_site_is_404_like_one_that_does_not_exist(stats_api, site, tenants):
    _, headers = site
    theirs = register(tenants, tenants.workspace()["id"])
    nowhere = f"nowhere-{uuid.uuid4().hex[:8]}.example"
    answers = [
        query(stats_api, headers, {"site": s, "metrics": ["visitors"], "date_range": "7d"}) for s in (theirs, nowhere)
    ]
    assert [r.status_code for r in answers] == [404, 404]
    assert [r.json() for r in answers] == [
        {"error": "not_found", "message": f"Site {theirs!r} not found."},
        {"error": "not_found", "message": f"Site {nowhere!r} not found."},
    ]


def test_a_key_without_stats_read_is_403(stats_api, site, tenants):
    host, _ = site
    ws_id = tenants.fetchval("SELECT workspace_id FROM pixel_domains WHERE host = $1", host)
    key = tenants.key(ws_id, scopes=[s for s in ALL_SCOPES if s != "stats:read"])
    r = query(
        stats_api, {"Authorization": f"Bearer {key}"}, {"site": host, "metrics": ["visitors"], "date_range": "7d"}
    )
    assert r.status_code == 403 and r.json()["message"] == "Insufficient permissions. Required scope: stats:read"
    assert r.headers["X-RateLimit-Limit"]  # the key's rate limit applies as on every route


@pytest.fixture(scope="module")
def frugal_api(server_env, ingest_worker, tmp_path_factory):
    """A server whose workspaces may spend 1 ms of ClickHouse time a minute."""
    env = {**server_env, "SLUICE_STATS_BUDGET_MS": "1"}
    with (
        running_api(env, tmp_path_factory.mktemp("stats-budget")) as url,
        httpx.Client(base_url=url + "/api/v1", timeout=30) as c,
    ):
        yield c


def test_a_spent_time_budget_is_429_until_the_minute_turns(frugal_api, tenants):
    ws = tenants.workspace()  # a budget of its own: the budget is the workspace's, across servers
    host, headers = register(tenants, ws["id"]), {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    body = {"site": host, "metrics": ["visitors"], "date_range": "7d"}
    statuses, refused = [], None
    for _ in range(3):  # one query spends the minute's 1 ms; the minute turns at most once meanwhile
        r = query(frugal_api, headers, body)
        statuses.append(r.status_code)
        if r.status_code == 429:
            refused = r
            break
    assert statuses[0] == 200 and refused is not None, statuses
    assert refused.json()["error"] == "stats_budget_exceeded" and "1 ms" in refused.json()["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["retry_after"] == int(refused.headers["Retry-After"])


def call_tool(client, headers, tool: str, arguments: dict) -> httpx.Response:
    return client.post(
        "/mcp/tools/call", json={"server": "analytics", "tool": tool, "arguments": arguments}, headers=headers
    )


def test_mcp_tools_query_one_site_through_the_planner(stats_api, site):
    host, headers = site
    r = call_tool(stats_api, headers, "top_pages", {"site": host})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["rows"] == [
        {"path": "/", "events": 2, "visitors": 2},
        {"path": "/pricing", "events": 1, "visitors": 1},
    ]
    counts = call_tool(stats_api, headers, "event_counts", {"site": host}).json()["result"]["rows"]
    assert counts == [{"event": "pageview", "events": 3}, {"event": "signup", "events": 1}]
    visitors = call_tool(stats_api, headers, "unique_visitors", {"site": host}).json()["result"]
    assert visitors["visitors"] == 2 and visitors["by_day"] == [
        {"day": datetime.now(UTC).date().isoformat(), "visitors": 2}
    ]


def test_mcp_stats_query_takes_the_route_s_body(stats_api, site, tenants):
    host, headers = site
    body = {"site": host, "metrics": ["visitors", "pageviews"], "date_range": "7d", "dimensions": ["visit:country"]}
    r = call_tool(stats_api, headers, "stats_query", body)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == query(stats_api, headers, body).json()
    r = call_tool(stats_api, headers, "stats_query", {**body, "metrics": ["visits"], "dimensions": ["event:page"]})
    assert r.status_code == 422 and r.json()["errors"]["arguments.body"]
    theirs = register(tenants, tenants.workspace()["id"])
    assert call_tool(stats_api, headers, "stats_query", {**body, "site": theirs}).status_code == 404
    ws_id = tenants.fetchval("SELECT workspace_id FROM pixel_domains WHERE host = $1", host)
    mcp_only = {"Authorization": f"Bearer {tenants.key(ws_id, scopes=['mcp:*'])}"}
    r = call_tool(stats_api, mcp_only, "stats_query", body)
    assert r.status_code == 403 and "also requires scope: stats:read" in r.json()["message"]
