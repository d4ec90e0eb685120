"""SLUICE_PIXEL_PATH over HTTP against a real API server started with it: `<P>/s.js`, `<P>/e` and
`<P>/c` answer exactly as /pixel.js, /api/v1/pixel/track and /api/v1/pixel/config do (same bytes,
same CORS, the same per-IP budget, the same body limit), an event posted to `<P>/e` is stored, the
aliases stay out of /openapi.json, and a bad prefix stops the start."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import running_api
from tests.e2e.test_pixel import BROWSER, event, stored_events

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/x7"
TRACK, CONFIG = "/api/v1/pixel/track", "/api/v1/pixel/config"
# Headers that differ between any two answers, whatever route gave them.
# Differ by response, not by route: `connection: close` is the server's choice when a refusal left
# part of a large body unread, which depends on how much of it had arrived.
PER_RESPONSE = {
    *("date", "x-request-id", "x-sluice-event-id", "x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit"),
    "connection",
}


# A per-IP budget of 3 requests, one more every 20 s: a fourth request in a row is refused.
BUDGET = 3


@pytest.fixture(scope="module")
def api(server_env, tmp_path_factory):
    """The API with the first-party prefix, behind a trusted proxy so that each request can come
    from an address (and budget) of its own."""
    env = {
        **server_env,
        "SLUICE_PIXEL_PATH": PREFIX,
        "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
        "SLUICE_PIXEL_RATE_LIMIT": str(BUDGET),
    }
    with running_api(env, tmp_path_factory.mktemp("first-party")) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


@pytest.fixture
def site(api, tenant):
    """A registered host of a fresh workspace: (workspace, host)."""
    ws, headers = tenant
    host = f"shop-{uuid.uuid4().hex[:8]}.example.com"
    r = api.post("/api/v1/pixel/domains", headers=headers, json={"host": host})
    assert r.status_code == 201, r.text
    return ws, host


def visitor() -> dict:
    n = uuid.uuid4().int
    return {**BROWSER, "X-Forwarded-For": f"10.{n % 256}.{n // 256 % 256}.{n // 65536 % 254 + 1}"}


def without_request_id(r: httpx.Response):
    return {k: v for k, v in r.json().items() if k != "request_id"} if r.content else None


def same_headers(alias: httpx.Response, original: httpx.Response) -> None:
    kept = [(name, value) for name, value in original.headers.items() if name not in PER_RESPONSE]
    assert [(name, value) for name, value in alias.headers.items() if name not in PER_RESPONSE] == kept


def test_the_script_is_the_same_bytes_and_headers(api):
    original, alias = api.get("/pixel.js"), api.get(PREFIX + "/s.js")
    assert alias.status_code == original.status_code == 200
    assert alias.content == original.content and alias.content
    assert alias.headers["Content-Type"].startswith("application/javascript")
    same_headers(alias, original)


@pytest.mark.parametrize("asking", ["origin", "referer", "stranger"])
def test_config_answers_as_the_original(api, site, asking):
    _ws, host = site
    headers = {
        "origin": {"Origin": f"https://{host}"},
        "referer": {"Referer": f"https://{host}/a"},
        "stranger": {"Origin": "https://not-registered.example"},
    }[asking]
    original = api.get(CONFIG, headers={**visitor(), **headers})
    alias = api.get(PREFIX + "/c", headers={**visitor(), **headers})
    assert alias.status_code == original.status_code == 200
    assert alias.json() == original.json()
    assert alias.json()["enabled"] is (asking != "stranger")
    same_headers(alias, original)


def test_an_event_posted_to_the_alias_is_stored(api, site, clickhouse_query):
    ws, host = site
    origin = {"Origin": f"https://{host}"}
    body = orjson.dumps(event(host, properties={"title": "Home", "pageview_id": "0123456789abcdef"}))
    r = api.post(PREFIX + "/e", content=body, headers={**visitor(), **origin, "Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    assert r.json() == {"tracked": True}
    assert r.headers["Access-Control-Allow-Origin"] == f"https://{host}"
    gif = api.get(PREFIX + "/e", params={"event": "pageview", "url": f"https://{host}/no-js"}, headers=visitor())
    assert gif.status_code == 200 and gif.content.startswith(b"GIF89a") and "no-store" in gif.headers["Cache-Control"]
    stored = stored_events(clickhouse_query, (ws["id"],), count=2)
    assert sorted(stored) == sorted(
        [(r.headers["X-Sluice-Event-ID"], ws["id"], host), (gif.headers["X-Sluice-Event-ID"], ws["id"], host)]
    )
    [(pageview_id,)] = clickhouse_query(
        "SELECT pageview_id FROM events WHERE event_id = toUUID({id:String})", {"id": r.headers["X-Sluice-Event-ID"]}
    )
    assert pageview_id == "0123456789abcdef"


def test_track_refusals_and_the_preflight_are_the_original_s(api, site):
    _ws, host = site
    asks = [
        ("OPTIONS", {"Origin": f"https://{host}", "Access-Control-Request-Method": "POST"}, None),
        ("OPTIONS", {"Origin": "https://not-registered.example"}, None),
        ("POST", {"Content-Type": "text/plain"}, orjson.dumps(event("not-registered.example.net"))),
        ("POST", {"Content-Type": "text/plain"}, orjson.dumps(event(host, properties={"x": "y" * 70_000}))),
        ("POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"event=x"),
    ]
    for method, headers, content in asks:
        original = api.request(method, TRACK, headers={**visitor(), **headers}, content=content)
        alias = api.request(method, PREFIX + "/e", headers={**visitor(), **headers}, content=content)
        assert alias.status_code == original.status_code, (method, headers, alias.text)
        assert without_request_id(alias) == without_request_id(original)
        same_headers(alias, original)
    assert [api.request(m, PREFIX + "/e").status_code for m in ("PUT", "DELETE")] == [405, 405]
    assert api.put(PREFIX + "/e").headers["Allow"] == "GET, OPTIONS, POST"


def test_the_aliases_spend_the_same_per_ip_budget(api, site):
    """One bucket per address, whichever path: the original and two aliases spend it, then both the
    alias and the original are refused (until a request is refilled, 20 s later)."""
    _ws, host = site
    headers = {**visitor(), "Content-Type": "text/plain"}
    body = orjson.dumps(event(host))
    spent = [
        api.post(TRACK, content=body, headers=headers),
        api.post(PREFIX + "/e", content=body, headers=headers),
        api.get(PREFIX + "/c", headers=headers),
    ]
    assert [r.status_code for r in spent] == [200] * BUDGET, [r.text for r in spent]
    assert [r.headers["X-RateLimit-Remaining"] for r in spent] == ["2", "1", "0"]
    refused = [api.post(PREFIX + "/e", content=body, headers=headers), api.post(TRACK, content=body, headers=headers)]
    assert [r.status_code for r in refused] == [429, 429]
    assert refused[0].json()["error"] == "rate_limit_exceeded" and refused[0].headers["X-Sluice-Drop-Reason"]


def test_the_aliases_are_not_in_the_openapi_document(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert TRACK in paths and "/pixel.js" in paths
    assert not [p for p in paths if p.startswith(PREFIX + "/")]


@pytest.mark.parametrize("value", ["/", "/api", "/api/x", "/x7/", "x7", "/x7.js", "/a b", "//x"])
def test_a_bad_prefix_stops_the_start_with_one_line(value):
    env = {**os.environ, "SLUICE_PIXEL_PATH": value}
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"configuration error: SLUICE_PIXEL_PATH has value {value!r}; expected a path")
    assert done.stdout == ""
