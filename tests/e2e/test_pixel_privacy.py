"""A domain's privacy settings applied by the pixel over HTTP: Sec-GPC / DNT drop an event as
`consent` while the site honours them, excluded paths drop it as `excluded`, and both are counted
in ClickHouse's dropped_events; the answers match /openapi.json."""

import time
import uuid

import httpx
import pytest

from tests.e2e.test_contract_accounts import Strict, inline

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
BROWSER = {"User-Agent": CHROME}
DRAIN_TIMEOUT = 60


@pytest.fixture
def site(client, tenant):
    """A registered host with the given settings: (workspace, auth headers, host, domain id)."""
    ws, headers = tenant
    host = f"privacy-{uuid.uuid4().hex[:10]}.sluice-tests.org"
    r = client.post("/pixel/domains", headers=headers, json={"host": host})
    assert r.status_code == 201, r.text
    return ws, headers, host, r.json()["data"]["id"]


def configure(client, site, **settings) -> None:
    _ws, headers, _host, domain_id = site
    r = client.patch(f"/pixel/domains/{domain_id}", headers=headers, json=settings)
    assert r.status_code == 200, r.text


def track(client, host: str, path: str = "/products/1", event: str = "pageview", **headers):
    body = {"event": event, "url": f"https://{host}{path}?utm_source=news"}
    return client.post("/pixel/track", json=body, headers={**BROWSER, **headers})


def dropped(r, reason: str) -> bool:
    return (
        r.status_code == 200
        and r.json() == {"tracked": False, "reason": reason}
        and r.headers["X-Sluice-Drop-Reason"] == reason
    )


def tracked(r) -> bool:
    return r.status_code == 200 and r.json() == {"tracked": True} and "X-Sluice-Drop-Reason" not in r.headers


@pytest.mark.parametrize("signal", [{"Sec-GPC": "1"}, {"DNT": "1"}, {"Sec-GPC": "1", "DNT": "1"}])
def test_a_privacy_signal_drops_the_event_as_consent_by_default(client, site, signal):
    assert dropped(track(client, site[2], **signal), "consent")


@pytest.mark.parametrize("signal", [{}, {"Sec-GPC": "0"}, {"DNT": "0"}, {"DNT": "null"}])
def test_no_signal_or_one_saying_no_is_tracked(client, site, signal):
    assert tracked(track(client, site[2], **signal))


def test_a_site_that_does_not_honour_the_signals_tracks_them_and_can_turn_them_back_on(client, site):
    configure(client, site, honor_privacy_signals=False)
    assert tracked(track(client, site[2], **{"Sec-GPC": "1"}))
    assert tracked(track(client, site[2], DNT="1"))
    configure(client, site, honor_privacy_signals=True)
    assert dropped(track(client, site[2], DNT="1"), "consent")


def test_the_gif_pixel_honours_the_signals_too(client, site):
    host = site[2]
    r = client.get(
        "/pixel/track", params={"event": "pageview", "url": f"https://{host}/a"}, headers={**BROWSER, "DNT": "1"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert r.headers["X-Sluice-Drop-Reason"] == "consent"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/admin", "excluded"),
        ("/admin/users/7", "excluded"),
        ("/preview/draft-1", "excluded"),
        ("/checkout", "excluded"),
        ("/preview/a/b", None),
        ("/checkout/done", None),
        ("/administrator", None),
        ("/products/1", None),
        ("", None),
    ],
)
def test_an_excluded_path_is_dropped_and_others_are_tracked(client, site, path, reason):
    configure(client, site, excluded_paths=["/admin/**", "/preview/*", "/checkout"])
    r = track(client, site[2], path)
    assert dropped(r, reason) if reason else tracked(r)


def test_clearing_the_excluded_paths_tracks_them_again(client, site):
    configure(client, site, excluded_paths=["/admin/**"])
    assert dropped(track(client, site[2], "/admin/x"), "excluded")
    configure(client, site, excluded_paths=[])
    assert tracked(track(client, site[2], "/admin/x"))


def test_the_reasons_come_in_order_disabled_consent_excluded_bot(client, site):
    """A feature turned off outranks the signal, the signal outranks the path, the path the bot."""
    configure(client, site, excluded_paths=["/admin/**"], features={"events": False})
    host = site[2]
    assert dropped(track(client, host, "/admin/x", event="click", DNT="1"), "disabled")
    assert dropped(track(client, host, "/admin/x", DNT="1"), "consent")
    assert dropped(track(client, host, "/admin/x", **{"User-Agent": "Googlebot/2.1"}), "excluded")
    assert dropped(track(client, host, "/x", **{"User-Agent": "Googlebot/2.1"}), "bot")


def test_a_batch_reports_each_events_reason(client, site):
    configure(client, site, excluded_paths=["/admin/**"])
    host = site[2]
    events = [{"event": "pageview", "url": f"https://{host}{path}"} for path in ("/admin/x", "/shop")]
    r = client.post("/pixel/track", json=events, headers=BROWSER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["dropped"], body["rejected"]) == (1, 1, 0)
    assert body["results"][0] == {"index": 0, "status": "dropped", "reason": "excluded"}
    assert r.headers["X-Sluice-Drop-Reason"] == "excluded"
    opted_out = client.post("/pixel/track", json=events, headers={**BROWSER, "Sec-GPC": "1"}).json()
    assert [result["reason"] for result in opted_out["results"]] == ["consent", "consent"]


def test_consent_and_excluded_drops_are_counted_in_clickhouse(client, site, clickhouse_query):
    ws = site[0]
    configure(client, site, excluded_paths=["/admin/**"])
    host = site[2]
    for _ in range(2):
        assert dropped(track(client, host, **{"Sec-GPC": "1"}), "consent")
    assert dropped(track(client, host, DNT="1"), "consent")
    assert dropped(track(client, host, "/admin"), "excluded")
    assert tracked(track(client, host, "/shop"))
    counts: dict = {}
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while counts != {"consent": 3, "excluded": 1} and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = clickhouse_query(
            "SELECT reason, sum(count) FROM dropped_events WHERE workspace_id = {ws:UInt64} GROUP BY reason",
            {"ws": ws["id"]},
        )
        counts = {reason: int(total) for reason, total in rows}
    assert counts == {"consent": 3, "excluded": 1}


def test_the_answers_match_the_document(api, client, site):
    """Dropped as consent or excluded, single or in a batch, and the domain with its settings: each
    answer is one the operation's declared schema admits."""
    document = httpx.get(api + "/openapi.json").json()

    def admitted(path: str, method: str, status: int, body) -> list[str]:
        answer = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
        return [e.message for e in Strict(inline(document, answer["schema"])).iter_errors(body)]

    configure(client, site, excluded_paths=["/admin/**"])
    host = site[2]
    for r in (track(client, host, DNT="1"), track(client, host, "/admin")):
        assert admitted("/api/v1/pixel/track", "post", 200, r.json()) == []
    events = [{"event": "pageview", "url": f"https://{host}/admin"}, {"event": "pageview", "url": f"https://{host}/"}]
    for headers in (BROWSER, {**BROWSER, "Sec-GPC": "1"}):
        r = client.post("/pixel/track", json=events, headers=headers)
        assert admitted("/api/v1/pixel/track", "post", 200, r.json()) == []
    _ws, headers, _host, domain_id = site
    r = client.patch(f"/pixel/domains/{domain_id}", headers=headers, json={"visitor_id_rotation": "monthly"})
    assert admitted("/api/v1/pixel/domains/{id}", "patch", 200, r.json()) == []
