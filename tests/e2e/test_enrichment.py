"""What a stored event says, end to end over HTTP through Kafka into ClickHouse: its device, its
place, where it came from and its session — and that the client's address is stored nowhere.

The API servers here trust 127.0.0.1 as a proxy, so each test picks its client's address with
X-Forwarded-For, and read places from a small .mmdb built for the documentation ranges
(tests/geo_fixture.py). They share the session's topics, worker and ClickHouse.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from storage.postgres import domains
from tests.conftest import running_api
from tests.geo_fixture import build_city_db

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.109 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
WAIT = 90


@pytest.fixture(scope="module")
def proxied(server_env, tmp_path_factory):
    """An API behind a trusted proxy (127.0.0.1), reading places from the test .mmdb."""
    directory = tmp_path_factory.mktemp("geo")
    env = {
        **server_env,
        "SLUICE_GEOIP_DB": str(build_city_db(directory / "city.mmdb")),
        "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
        "SLUICE_GEO_HEADERS": "cloudflare",
    }
    with running_api(env, directory) as url, httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
        yield c


def site(tenants, **config) -> tuple[int, str]:
    ws = tenants.workspace()
    host = f"enrich-{uuid.uuid4().hex[:8]}.example"
    tenants.run(lambda pool: domains.create_domain(pool, ws["id"], host, config))
    return ws["id"], host


def track(client: httpx.Client, events: list[dict], address: str, every: bool = True, **headers) -> dict:
    """POST a batch from `address`; `every`: each event must be accepted."""
    r = client.post(
        "/pixel/track", json=events, headers={"X-Forwarded-For": address, "User-Agent": CHROME_WINDOWS, **headers}
    )
    assert r.status_code == 200, r.text
    assert not every or r.json()["accepted"] == len(events), r.text
    return r.json()


def rows(query, workspace_id: int, expected: int, columns: str = "*") -> list[dict]:
    """The workspace's events once `expected` of them are stored, as dicts, in time order."""
    deadline = time.monotonic() + WAIT
    while True:
        count = query("SELECT count() FROM events WHERE workspace_id = {ws:UInt64}", {"ws": workspace_id})[0][0]
        if count >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert count == expected
    names = [
        n
        for (n,) in query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events' ORDER BY position"
        )
    ]
    found = query("SELECT * FROM events WHERE workspace_id = {ws:UInt64} ORDER BY time, path", {"ws": workspace_id})
    return [dict(zip(names, row, strict=True)) for row in found]


def page(host: str, path: str = "/", **fields) -> dict:
    return {"event": "pageview", "url": f"https://{host}{path}", **fields}


def test_devices_come_from_the_user_agent_and_bots_are_dropped(proxied, tenants, clickhouse_query):
    ws, host = site(tenants)
    answer = track(
        proxied,
        [
            page(host, "/win", user_agent=CHROME_WINDOWS),
            page(host, "/iphone", user_agent=SAFARI_IPHONE),
            page(host, "/bot", user_agent=GOOGLEBOT),
        ],
        "192.0.2.10",
        every=False,
    )
    assert [r["status"] for r in answer["results"]] == ["accepted", "accepted", "dropped"]
    assert answer["results"][2]["reason"] == "bot"
    stored = {r["path"]: r for r in rows(clickhouse_query, ws, 2)}
    win, iphone = stored["/win"], stored["/iphone"]
    assert (win["browser"], win["browser_version"], win["os"], win["os_version"], win["device"]) == (
        "Chrome",
        "120.0",
        "Windows",
        "10",
        "desktop",
    )
    assert (iphone["browser"], iphone["browser_version"], iphone["os"], iphone["os_version"], iphone["device"]) == (
        "Mobile Safari",
        "17.4",
        "iOS",
        "17.4",
        "mobile",
    )
    assert (iphone["device_brand"], iphone["device_model"]) == ("Apple", "iPhone")
    assert not win["is_bot"] and not iphone["is_bot"]
    dropped = clickhouse_query(
        "SELECT sum(count) FROM dropped_events WHERE workspace_id = {ws:UInt64} AND reason = 'bot'", {"ws": ws}
    )
    deadline = time.monotonic() + WAIT
    while dropped[0][0] != 1 and time.monotonic() < deadline:
        time.sleep(0.3)
        dropped = clickhouse_query(
            "SELECT sum(count) FROM dropped_events WHERE workspace_id = {ws:UInt64} AND reason = 'bot'", {"ws": ws}
        )
    assert dropped[0][0] == 1


def test_places_come_from_the_address_or_a_trusted_cdn(proxied, client, tenants, clickhouse_query):
    ws, host = site(tenants)
    track(proxied, [page(host, "/de")], "192.0.2.10")
    track(proxied, [page(host, "/us")], "198.51.100.20")
    track(proxied, [page(host, "/fr")], "2001:db8::1")
    track(proxied, [page(host, "/private")], "10.1.2.3")
    # A CDN in front says where the visitor is; the trusted proxy passes it on and it wins.
    track(proxied, [page(host, "/cdn")], "192.0.2.10", **{"CF-IPCountry": "NL"})
    # Another CDN's header is a client's own, passed on: not believed.
    track(proxied, [page(host, "/other-cdn")], "192.0.2.10", **{"CloudFront-Viewer-Country": "NL"})
    # Without a trusted proxy the header is anybody's: the session's API trusts none.
    untrusted = {"CF-IPCountry": "NL", "User-Agent": CHROME_WINDOWS}
    r = client.post("/pixel/track", json=[page(host, "/untrusted")], headers=untrusted)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    stored = {r["path"]: (r["country"], r["region"], r["city"]) for r in rows(clickhouse_query, ws, 7)}
    assert stored["/de"] == ("DE", "DE-BY", "Munich")
    assert stored["/us"] == ("US", "US-CA", "San Francisco")
    assert stored["/fr"] == ("FR", "FR-IDF", "Paris")
    assert stored["/private"] == ("", "", "")
    assert stored["/cdn"][0] == "NL"
    assert stored["/other-cdn"] == ("DE", "DE-BY", "Munich")
    assert stored["/untrusted"] == ("", "", "")  # 127.0.0.1 is nowhere, and CF-IPCountry was not believed


def test_sources_and_channels(proxied, tenants, clickhouse_query):
    ws, host = site(tenants)
    track(
        proxied,
        [
            page(host, "/google", referrer="https://www.google.com/"),
            page(host, "/facebook", referrer="https://m.facebook.com/"),
            page(host, "/newsletter?utm_source=newsletter&utm_medium=email&utm_campaign=december"),
            page(host, "/paid?utm_source=google&utm_medium=cpc"),
            page(host, "/direct"),
            page(host, "/inside", referrer=f"https://{host}/direct"),
            page(host, "/blog", referrer="https://blog.example.org/post"),
        ],
        "192.0.2.11",
    )
    stored = {r["path"]: (r["referrer_source"], r["channel"]) for r in rows(clickhouse_query, ws, 7)}
    assert stored == {
        "/google": ("Google", "Organic Search"),
        "/facebook": ("Facebook", "Organic Social"),
        "/newsletter": ("newsletter", "Email"),
        "/paid": ("Google", "Paid Search"),
        "/direct": ("", "Direct"),
        "/inside": ("", "Direct"),
        "/blog": ("blog.example.org", "Referral"),
    }


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_sessions_follow_client_times_and_add_up_to_the_events(proxied, tenants, clickhouse_query):
    ws, host = site(tenants)
    now = datetime.now(UTC)
    visitor = "198.51.100.30"
    track(
        proxied,
        [
            page(host, "/a", timestamp=stamp(now - timedelta(minutes=40)), referrer="https://www.google.com/"),
            {"event": "signup", "url": f"https://{host}/a", "timestamp": stamp(now - timedelta(minutes=37))},
            page(host, "/b", timestamp=stamp(now - timedelta(minutes=35))),
            page(host, "/c", timestamp=stamp(now - timedelta(minutes=4))),  # 31 minutes later
        ],
        visitor,
    )
    track(proxied, [page(host, "/other")], "192.0.2.99")  # another visitor, a session of their own
    stored = rows(clickhouse_query, ws, 5)
    by_path = {r["path"]: r["session_id"] for r in stored if r["event"] == "pageview"}
    assert by_path["/a"] == by_path["/b"] != by_path["/c"]
    assert len({by_path["/a"], by_path["/c"], by_path["/other"]}) == 3
    assert all(r["session_id"] for r in stored)

    sessions = clickhouse_query(
        "SELECT session_id, entry_page, exit_page, pageviews, events, interactions, is_bounce, duration, "
        "referrer_source, channel, country, browser, os, device, is_late "
        "FROM sessions WHERE workspace_id = {ws:UInt64} ORDER BY start",
        {"ws": ws},
    )
    first, second, other = sessions
    assert first[:10] == (by_path["/a"], "/a", "/b", 2, 3, 1, 0, 300, "Google", "Organic Search")
    assert first[10:14] == ("US", "Chrome", "Windows", "desktop") and not first[14]
    assert second[:8] == (by_path["/c"], "/c", "/c", 1, 1, 0, 1, 0)
    assert other[0] == by_path["/other"] and other[6] == 1
    # The sessions add up to the raw events, and a day's rollup to the sessions.
    totals = clickhouse_query(
        "SELECT sum(events), sum(pageviews) FROM sessions WHERE workspace_id = {ws:UInt64}", {"ws": ws}
    )[0]
    raw = clickhouse_query(
        "SELECT count(), countIf(event = 'pageview') FROM events WHERE workspace_id = {ws:UInt64}", {"ws": ws}
    )[0]
    assert tuple(totals) == tuple(raw) == (5, 4)
    daily = clickhouse_query(
        "SELECT sum(visits), sum(pageviews) FROM sessions_daily WHERE workspace_id = {ws:UInt64}", {"ws": ws}
    )[0]
    assert tuple(daily) == (3, 4)


def test_a_site_without_sessions_stores_session_zero(proxied, tenants, clickhouse_query):
    ws, host = site(tenants, sessions=False)
    track(proxied, [page(host, "/x")], "192.0.2.12")
    assert [r["session_id"] for r in rows(clickhouse_query, ws, 1)] == [0]
    assert clickhouse_query("SELECT count() FROM sessions WHERE workspace_id = {ws:UInt64}", {"ws": ws})[0][0] == 0


def test_the_client_address_is_stored_in_no_table(proxied, tenants, clickhouse_query, database_url):
    ws, host = site(tenants)
    address, v6 = "198.51.100.77", "2001:db8:77::77"
    track(proxied, [page(host, "/ip")], address)
    track(proxied, [page(host, "/ip6")], v6)
    track(proxied, [page(host, "/bot", user_agent=GOOGLEBOT)], address, every=False)  # a drop is counted, too
    rows(clickhouse_query, ws, 2)
    tables = clickhouse_query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT IN ('MaterializedView')"
    )
    assert {"events", "sessions", "sessions_state", "dropped_events"} <= {t for (t,) in tables}
    for (table,) in tables:
        columns = clickhouse_query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
            {"t": table},
        )
        # Aggregate states are read through the views that finalise them (sessions).
        readable = [f"toString(`{n}`)" for n, kind in columns if not kind.startswith("AggregateFunction")]
        if not readable:
            continue
        found = clickhouse_query(
            f"SELECT count() FROM `{table}` WHERE arrayExists(x -> position(x, {{a:String}}) > 0 "  # noqa: S608
            f"OR position(x, {{b:String}}) > 0, [{', '.join(readable)}])",
            {"a": address, "b": v6},
        )[0][0]
        assert found == 0, f"{table} holds a client address"
    # Nor does Postgres (the pixel writes nothing there, and must not start to).
    text = _postgres_text(database_url)
    assert address not in text and v6 not in text


def _postgres_text(dsn: str) -> str:
    import asyncio

    import asyncpg

    async def dump() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            parts = []
            for (name,) in names:
                parts += [r[0] for r in await conn.fetch(f'SELECT t::text FROM "{name}" AS t')]  # noqa: S608
            return "\n".join(parts)
        finally:
            await conn.close()

    return asyncio.run(dump())
