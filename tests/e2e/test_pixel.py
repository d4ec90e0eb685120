"""The pixel over HTTP against the real stack: config, track (JSON, beacon, batch, GIF), CORS,
validation, drops, the per-IP limit, and the enriched records read back from Kafka."""

import asyncio
import time
import uuid

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from ingest.events import Topics
from tests.conftest import running_api

CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
BROWSER = {"User-Agent": CHROME}
# Deadlines for what a loaded machine may take: a topic read, a loop of requests.
DEADLINE_SECONDS = 60


@pytest.fixture
def site(client, tenant):
    """A workspace with a registered host: (workspace, auth headers, host)."""
    ws, headers = tenant
    host = f"shop-{uuid.uuid4().hex[:8]}.example.com"
    r = client.post("/pixel/domains", headers=headers, json={"host": host})
    assert r.status_code == 201, r.text
    return ws, headers, host


def event(host: str, **fields) -> dict:
    return {
        "event": "pageview",
        "url": f"https://{host}/products/1?utm_source=news&utm_medium=mail",
        "referrer": "https://www.google.com/search?q=x",
        "properties": {"title": "Shoes"},
        **fields,
    }


async def _read(bootstrap: str, topic: str, want, timeout: float, enough) -> list[dict]:
    """Records of the topic matching want(record), read from the start until enough(found) and the
    topic has nothing more to give at once, or until timeout."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    found, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    try:  # the session's topics also carry other tests' poison records
                        record = orjson.loads(message.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(record, dict) and want(record):
                        found.append((message.key, message.value, record))
            if enough(found) and not batches:
                break
        return found
    finally:
        await consumer.stop()


def read_topic(server_env, family: str, want, timeout: float = DEADLINE_SECONDS, enough=bool):
    """By default until anything is found: a 2xx pixel answer means its record is in Kafka already."""
    topic = getattr(Topics.with_prefix(server_env["SLUICE_KAFKA_TOPIC_PREFIX"]), family)
    return asyncio.run(_read(server_env["KAFKA_BOOTSTRAP_SERVERS"], topic, want, timeout, enough))


# -- config -----------------------------------------------------------------------------------


def test_config_of_a_registered_origin_with_cors(client, site):
    _ws, _headers, host = site
    r = client.get("/pixel/config", headers={"Origin": f"https://{host}"})
    assert r.status_code == 200
    assert r.json() == {
        "enabled": True,
        "features": {"pageviews": True, "events": True, "sessions": True},
        "sample_rate": 1.0,
    }
    assert r.headers["Access-Control-Allow-Origin"] == f"https://{host}"
    by_referer = client.get("/pixel/config", headers={"Referer": f"https://{host}/some/page"})
    assert by_referer.json()["enabled"] is True


def test_config_of_an_unknown_origin_is_disabled_without_cors(client):
    r = client.get("/pixel/config", headers={"Origin": "https://nobody-registered.example.org"})
    assert r.status_code == 200
    assert r.json() == {"enabled": False}
    assert "Access-Control-Allow-Origin" not in r.headers
    assert client.get("/pixel/config").json() == {"enabled": False}


def test_config_follows_a_domain_change(client, site):
    _ws, headers, host = site
    domain_id = client.get("/pixel/domains", headers=headers).json()["data"][0]["id"]
    client.patch(f"/pixel/domains/{domain_id}", headers=headers, json={"sample_rate": 0.5, "enabled": False})
    r = client.get("/pixel/config", headers={"Origin": f"https://{host}"})
    assert r.json()["sample_rate"] == 0.5 and r.json()["enabled"] is False


# -- track: accepted events reach Kafka enriched ----------------------------------------------


def test_tracked_json_and_beacon_events_arrive_on_kafka_enriched(client, site, server_env):
    ws, _headers, host = site
    r = client.post(
        "/pixel/track",
        json=event(host, timestamp=int(time.time() * 1000) + 3_600_000),
        headers={**BROWSER, "Origin": f"https://{host}"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"tracked": True}
    assert r.headers["Access-Control-Allow-Origin"] == f"https://{host}"
    json_id = r.headers["X-Sluice-Event-ID"]
    beacon = client.post(
        "/pixel/track",
        content=orjson.dumps(event(host, event="signup")),
        headers={**BROWSER, "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert beacon.status_code == 200 and beacon.json() == {"tracked": True}

    found = read_topic(server_env, "pixel", lambda rec: rec["workspace_id"] == ws["id"])
    records = {rec["event_id"]: (key, value, rec) for key, value, rec in found}
    assert len(records) == 2
    key, value, rec = records[json_id]
    assert key == str(ws["id"]).encode()
    assert rec["source"] == "json" and rec["event"] == "pageview"
    assert (rec["host"], rec["path"], rec["referrer_host"]) == (host, "/products/1", "www.google.com")
    assert (rec["utm_source"], rec["utm_medium"]) == ("news", "mail")
    assert (rec["browser"], rec["browser_version"], rec["os"], rec["os_version"], rec["device"], rec["is_bot"]) == (
        "Chrome",
        "120.0",
        "Mac OS X",
        "10.15",
        "desktop",
        False,
    )
    # The consumer's session hint comes first: visitor, (no) previous visitor, timeout, time, arrival.
    assert value.startswith(b'{"_session":"')
    assert rec["_session"].split("|")[:3] == [rec["visitor_id"], "", "1800"]
    assert rec["time"] == rec["received_at"]  # a client clock an hour ahead is clamped
    assert rec["client_time"] > rec["received_at"]
    assert orjson.loads(rec["properties"]) == {"title": "Shoes"}
    assert rec["ip_prefix"] == "127.0.0.0" and len(rec["visitor_id"]) == 32
    assert b"127.0.0.1" not in value  # never the raw address
    (other,) = [r for r in records.values() if r[2]["event_id"] != json_id]
    assert other[2]["source"] == "beacon" and other[2]["event"] == "signup"
    assert other[2]["visitor_id"] == rec["visitor_id"]  # same address and agent, same day


def test_a_batch_answers_per_event(client, site, server_env):
    ws, _headers, host = site
    batch = [
        event(host),
        {"event": "bad name", "url": "nope"},
        event("unregistered.example.net"),
        event(host, event="add_to_cart", user_agent="curl/8.0"),
    ]
    r = client.post("/pixel/track", json=batch, headers=BROWSER)
    assert r.status_code == 207, r.text
    body = r.json()
    assert (body["accepted"], body["dropped"], body["rejected"]) == (1, 1, 2)
    first, invalid, unknown, bot = body["results"]
    assert first["status"] == "accepted" and first["index"] == 0
    assert invalid["status"] == "rejected" and invalid["error"] == "validation_failed"
    assert set(invalid["errors"]) == {"event", "url"}
    assert unknown["status"] == "rejected" and unknown["error"] == "unknown_domain"
    assert bot == {"index": 3, "status": "dropped", "reason": "bot"}
    assert r.headers["X-Sluice-Drop-Reason"] == "bot, invalid, unknown_domain"
    found = read_topic(server_env, "pixel", lambda rec: rec["workspace_id"] == ws["id"])
    assert [rec["event_id"] for _k, _v, rec in found] == [first["event_id"]]
    assert found[0][2]["source"] == "batch"


def test_a_batch_of_valid_events_is_200_and_of_only_invalid_ones_a_422_envelope(client, site):
    _ws, _headers, host = site
    ok = client.post("/pixel/track", json=[event(host), event(host, event="click")], headers=BROWSER)
    assert ok.status_code == 200 and ok.json()["accepted"] == 2
    bad = client.post("/pixel/track", json=[{"event": "x"}, {"url": "https://a.b/"}], headers=BROWSER)
    assert bad.status_code == 422
    body = bad.json()
    assert body["error"] == "validation_failed" and body["message"]
    assert body["errors"] == {"0.url": ["The url field is required."], "1.event": ["The event field is required."]}
    assert body["rejected"] == 2 and [r["error"] for r in body["results"]] == ["validation_failed"] * 2


def test_a_batch_over_the_maximum_is_422(client, site):
    """maxItems is declared in the body's schema: past it is invalid input like any other (413 is
    for a body over SLUICE_MAX_BODY_BYTES)."""
    _ws, _headers, host = site
    r = client.post("/pixel/track", json=[event(host)] * 101, headers=BROWSER)
    assert r.status_code == 422
    assert r.json()["errors"] == {"body": ["A batch holds at most 100 events; this one has 101."]}


def test_the_gif_variant_answers_an_uncached_pixel(client, site, server_env):
    ws, _headers, host = site
    r = client.get(
        "/pixel/track", params={"event": "pageview", "url": f"https://{host}/no-js", "_": "1"}, headers=BROWSER
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/gif" and r.content.startswith(b"GIF89a")
    assert "no-store" in r.headers["Cache-Control"]
    by_referer = client.get("/pixel/track", headers={**BROWSER, "Referer": f"https://{host}/from-referer"})
    assert by_referer.status_code == 200
    found = read_topic(server_env, "pixel", lambda rec: rec["workspace_id"] == ws["id"])
    assert sorted(rec["path"] for _k, _v, rec in found) == ["/from-referer", "/no-js"]
    assert {rec["source"] for _k, _v, rec in found} == {"gif"}
    bad = client.get("/pixel/track", params={"url": "nope"}, headers=BROWSER)
    assert bad.status_code == 422 and bad.headers["X-Sluice-Drop-Reason"] == "invalid"


# -- refusals and drops -----------------------------------------------------------------------


def test_preflight_allows_registered_origins_only(client, site):
    _ws, _headers, host = site
    headers = {
        "Origin": f"https://{host}",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    r = client.options("/pixel/track", headers=headers)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == f"https://{host}"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    refused = client.options("/pixel/track", headers={**headers, "Origin": "https://evil.example.org"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "http://{host}:8080",
        "https://{host}:8443",
        "ftp://{host}",
        "https://{host}/",
        "https://evil.{host}.attacker.example",
    ],
)
def test_an_origin_other_than_the_sites_own_gets_no_cors(client, site, origin):
    """Only https://<host> and http://<host> on their own ports; `null` (sandboxed frames, file:
    pages) is anybody's, and a port is another origin, whatever the host."""
    _ws, _headers, host = site
    origin = origin.format(host=host)
    page = {"Origin": origin, "Referer": f"https://{host}/page"}
    config = client.get("/pixel/config", headers=page)
    assert "Access-Control-Allow-Origin" not in config.headers
    assert config.json() == {"enabled": False}
    preflight = client.options("/pixel/track", headers={**page, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and preflight.json()["error"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in preflight.headers
    r = client.post("/pixel/track", json=event(host), headers={**BROWSER, **page})
    assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("origin", ["https://{host}", "http://{host}", "https://{host}:443", "http://{host}:80"])
def test_the_sites_own_origins_get_cors(client, site, origin):
    _ws, _headers, host = site
    origin = origin.format(host=host)
    config = client.get("/pixel/config", headers={"Origin": origin})
    assert config.json()["enabled"] is True and config.headers["Access-Control-Allow-Origin"] == origin
    preflight = client.options("/pixel/track", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == origin
    r = client.post("/pixel/track", json=event(host), headers={**BROWSER, "Origin": origin})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin


def stored_events(clickhouse_query, workspace_ids: tuple, count: int, seconds: float = 60) -> list[tuple]:
    """(event id, workspace, host) of the workspaces' events in ClickHouse, once `count` are there."""
    deadline = time.monotonic() + seconds
    while True:
        rows = clickhouse_query(
            "SELECT toString(event_id), workspace_id, host FROM events WHERE workspace_id IN {ws:Array(UInt64)}",
            {"ws": list(workspace_ids)},
        )
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_another_workspaces_www_claim_gets_none_of_the_sites_events(client, tenants, site, clickhouse_query):
    """The hijack: B claims www.<A's host>. A's www visitors must never land in B."""
    owner, _headers, host = site
    other = tenants.workspace()
    other_headers = {"Authorization": f"Bearer {tenants.key(other['id'])}"}
    marker_host = f"other-{uuid.uuid4().hex[:8]}.example.com"
    for claimed in (f"www.{host}", marker_host):
        assert client.post("/pixel/domains", headers=other_headers, json={"host": claimed}).status_code == 201
    www = client.post("/pixel/track", json=event(f"www.{host}"), headers=BROWSER)
    assert www.status_code == 403, www.text
    assert www.json()["error"] == "domain_not_verified" and www.json()["host"] == f"www.{host}"
    mine = client.post("/pixel/track", json=event(host), headers=BROWSER)
    # One workspace, one partition: once this later event of B's is stored, an earlier one would be too.
    marker = client.post("/pixel/track", json=event(marker_host), headers=BROWSER)
    assert mine.status_code == marker.status_code == 200
    stored = stored_events(clickhouse_query, (owner["id"], other["id"]), count=2)
    assert sorted(stored) == sorted(
        [
            (mine.headers["X-Sluice-Event-ID"], owner["id"], host),
            (marker.headers["X-Sluice-Event-ID"], other["id"], marker_host),
        ]
    )


def test_each_bad_field_is_named_in_a_422(client, site):
    _ws, _headers, host = site
    r = client.post(
        "/pixel/track",
        headers=BROWSER,
        json={
            "event": "has space",
            "url": f"https://{host}/" + "a" * 2050,
            "referrer": 5,
            "properties": {"a": {"b": {"c": {"d": 1}}}},
            "timestamp": "soon",
            "color": "red",
        },
    )
    assert r.status_code == 422
    assert r.headers["X-Sluice-Drop-Reason"] == "invalid"
    assert set(r.json()["errors"]) == {"event", "url", "referrer", "properties", "timestamp", "color"}


def test_unknown_domain_is_refused_with_403_and_a_clear_error(client):
    """A valid event for a host nobody registered is refused for the state of things, not for its
    input: 403, as origin_not_allowed is."""
    r = client.post("/pixel/track", json=event("not-registered.example.net"), headers=BROWSER)
    assert r.status_code == 403
    body = r.json()
    assert body["error"] == "unknown_domain" and body["host"] == "not-registered.example.net"
    assert "POST /api/v1/pixel/domains" in body["message"]


def test_a_body_over_the_limit_is_413_and_odd_content_types_400(client, site):
    _ws, _headers, host = site
    big = orjson.dumps(event(host, properties={"x": "y" * 70_000}))
    assert client.post("/pixel/track", content=big, headers={"Content-Type": "text/plain"}).status_code == 413
    r = client.post("/pixel/track", content=b"event=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    assert client.post("/pixel/track", content=b"{oops", headers={"Content-Type": "text/plain"}).status_code == 400


def test_bots_sampled_out_and_disabled_events_are_dropped_and_counted(client, site, server_env):
    ws, headers, host = site
    bot = client.post("/pixel/track", json=event(host), headers={"User-Agent": "Googlebot/2.1"})
    assert bot.status_code == 200
    assert bot.json() == {"tracked": False, "reason": "bot"}
    assert bot.headers["X-Sluice-Drop-Reason"] == "bot"
    domain_id = client.get("/pixel/domains", headers=headers).json()["data"][0]["id"]
    client.patch(
        f"/pixel/domains/{domain_id}", headers=headers, json={"sample_rate": 0.5, "features": {"events": False}}
    )
    sampled = client.post("/pixel/track", json=event(host, sample_key=0.7), headers=BROWSER)
    assert sampled.json() == {"tracked": False, "reason": "sampled_out"}
    kept = client.post("/pixel/track", json=event(host, sample_key=0.2), headers=BROWSER)
    assert kept.json() == {"tracked": True}
    disabled = client.post("/pixel/track", json=event(host, event="click"), headers=BROWSER)
    assert disabled.json() == {"tracked": False, "reason": "disabled"}
    # Counts are sent once a second (ingest/handoff/drops.py): read until all three have come.
    drops = read_topic(
        server_env,
        "dropped",
        lambda rec: rec["workspace_id"] == ws["id"],
        enough=lambda found: sum(rec["count"] for _k, _v, rec in found) >= 3,
    )
    counted = {}
    for _k, _v, rec in drops:
        counted[rec["reason"]] = counted.get(rec["reason"], 0) + rec["count"]
    assert counted == {"bot": 1, "sampled_out": 1, "disabled": 1}


# -- per-IP limit, behind a trusted proxy -----------------------------------------------------


@pytest.fixture(scope="module")
def proxied_api(server_env, tmp_path_factory):
    env = {**server_env, "SLUICE_TRUSTED_PROXIES": "127.0.0.1"}
    with running_api(env, tmp_path_factory.mktemp("pixel-proxied")) as url:
        yield url


def random_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 256}.{n // 256 % 256}.{n // 65536 % 254 + 1}"


def test_an_ip_is_refused_after_300_requests_a_minute(proxied_api, site):
    _ws, _headers, host = site
    ip = random_ip()
    body = orjson.dumps(event(host))
    with httpx.Client(base_url=proxied_api + "/api/v1", timeout=10) as c:
        headers = {**BROWSER, "Content-Type": "application/json", "X-Forwarded-For": ip}
        # The bucket holds 300 and refills at 300/min (5/s) while the loop runs: by the time measured
        # so far, never more than that has been admitted, however slowly the requests went.
        started, accepted = time.monotonic(), 0
        while (refused := c.post("/pixel/track", content=body, headers=headers)).status_code == 200:
            accepted += 1
            elapsed = time.monotonic() - started
            assert accepted <= 300 + elapsed * 5 + 1, f"{accepted} admitted in {elapsed:.1f} s"
            assert elapsed < DEADLINE_SECONDS, f"never refused: {accepted} admitted in {elapsed:.1f} s"
        assert accepted >= 300
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limit_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["X-Sluice-Drop-Reason"] == "rate_limited"
        fresh = c.post("/pixel/track", content=body, headers={**headers, "X-Forwarded-For": random_ip()})
        assert fresh.status_code == 200
