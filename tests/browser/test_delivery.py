"""How events travel, in a real browser: a burst goes as one request and is stored once, a page
restored from the back-forward cache sends nothing twice, and first-party serving (the script and
its endpoints under the site's own host) works without the names blockers look for."""

from collections import Counter

from tests.browser.site import document, named

BURST = 5
# Five events in one task of the page: far inside the script's 1 s batching window, however loaded the machine.
FIRE_BURST = f"for (let i = 0; i < {BURST}; i++) sluice('event', 'burst_' + i, {{n: i}});"


def test_a_burst_of_events_is_sent_in_one_request_and_stored_once(site, browser):
    site.page("/", document(site.script()))
    browser.get(site.url("/"))
    site.wait_sent(lambda sent: named(sent, "pageview"), "the pageview")
    earlier = len(site.track_requests())
    browser.execute_script(FIRE_BURST)
    burst = {f"burst_{i}" for i in range(BURST)}
    site.wait_sent(lambda sent: burst <= {e["event"] for e in sent}, "the burst")

    (request,) = site.track_requests()[earlier:]
    assert [e["event"] for e in site.events_of(request)] == sorted(burst)
    rows = site.drain(browser)
    assert Counter(row["event"] for row in rows if row["event"] in burst) == dict.fromkeys(burst, 1)
    assert Counter(e["event"] for e in site.sent() if e["event"] in burst) == dict.fromkeys(burst, 1)


def test_a_page_back_from_the_cache_sends_nothing_twice(site, browser):
    site.page(
        "/",
        document(
            site.script() + "<script>addEventListener('pageshow', e => { window.restored = e.persisted; })</script>"
        ),
    )
    browser.get(site.url("/"))
    browser.execute_script("sluice('event', 'once')")
    browser.get(site.url("/other"))  # leaving flushes: pageview and `once` go now
    browser.back()
    assert browser.execute_script("return window.restored") is True  # from the back-forward cache
    browser.get(site.url("/other"))

    rows = site.drain(browser)
    assert [row["event"] for row in rows].count("once") == 1
    assert [e["event"] for e in site.sent()].count("once") == 1
    # Back from the cache is a new view of the page: a pageview of its own, with a new id.
    pageviews = named(rows, "pageview")
    assert len(pageviews) == 2 and len({row["properties"]["pageview_id"] for row in pageviews}) == 2


def test_first_party_serving_stores_pageviews_through_the_sites_own_host(site, browser):
    site.page("/", document(site.script(src="/x/s.js", endpoint="/x"), title="First party"))
    browser.get(site.url("/"))

    rows = site.wait_rows(lambda rows: named(rows, "pageview"), "the pageview")
    assert [(row["url"], row["properties"]["title"]) for row in rows] == [(site.url("/"), "First party")]
    asked = {(s.host, s.route) for s in site.requests(lambda s: s.host in (site.host, site.api_host))}
    assert {(site.host, "/x/s.js"), (site.host, "/x/c"), (site.host, "/x/e")} <= asked
    assert not [route for _host, route in asked if route.endswith("pixel.js") or "track" in route]
