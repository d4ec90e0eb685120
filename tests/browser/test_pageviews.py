"""Pageviews from a real browser: on load, on SPA navigations (history API), on hash changes when
the site asks for them, the calls a page queues before the script loads, and 404s."""

import re
from urllib.parse import quote

from selenium.webdriver.common.by import By

from tests.browser.site import STUB, document, named

PAGEVIEW_ID = re.compile(r"[0-9a-f]{16}")


def pageviews(events: list[dict]) -> list[dict]:
    return named(events, "pageview")


def test_a_page_load_stores_a_pageview_with_its_url_referrer_title_and_id(site, browser):
    site.page("/products/1", document(site.script(), title="Red shoes"))
    url = site.url("/products/1?utm_source=news")
    browser.get(f"http://elsewhere.example/link?to={quote(url)}")
    browser.find_element(By.ID, "go").click()

    (row,) = site.wait_rows(lambda rows: len(pageviews(rows)) == 1, "the pageview")
    assert row["event"] == "pageview"
    assert (row["url"], row["path"]) == (url, "/products/1")
    # Chromium's default policy (strict-origin-when-cross-origin) sends another site only the origin.
    assert row["referrer"] == "http://elsewhere.example/"
    assert row["properties"]["title"] == "Red shoes"
    assert PAGEVIEW_ID.fullmatch(row["properties"]["pageview_id"])


def step(browser, site, js: str, path: str, seen_before: int) -> None:
    """Runs a navigation in the page, then waits until its pageview (the seen_before+1th) is sent."""
    browser.execute_script(js)
    site.wait_sent(lambda sent: len(pageviews(sent)) > seen_before, f"a pageview of {path}")
    assert site.url(path) == pageviews(site.sent())[seen_before]["url"]


def test_spa_navigations_each_store_a_pageview_and_the_same_url_again_none(site, browser):
    site.page("/", document(site.script()))
    browser.get(site.url("/"))
    site.wait_sent(lambda sent: len(pageviews(sent)) == 1, "the landing pageview")

    step(browser, site, "history.pushState({}, '', '/a')", "/a", 1)
    # The same URL again (a router re-pushing its current route) is no new page. The next
    # navigation comes in a later timer, after the script has looked at the push: the third
    # pageview being /b's shows that the push made none.
    same_then_b = "history.pushState({}, '', '/a'); setTimeout(() => history.replaceState({}, '', '/b'), 100)"
    step(browser, site, same_then_b, "/b", 2)
    step(browser, site, "history.back()", "/a", 3)  # history: /, /a, /b (replaced /a): back to /a

    paths = ["/", "/a", "/b", "/a"]
    rows = site.wait_rows(lambda rows: len(pageviews(rows)) == 4, "four pageviews")
    assert [row["path"] for row in pageviews(rows)] == paths
    ids = [row["properties"]["pageview_id"] for row in pageviews(rows)]
    assert len(set(ids)) == 4 and all(PAGEVIEW_ID.fullmatch(i) for i in ids)
    assert [e["url"] for e in pageviews(site.sent())] == [site.url(p) for p in paths]


def test_hash_changes_are_no_pageviews_without_hash_routing(site, browser):
    site.page("/", document(site.script()))
    browser.get(site.url("/"))
    site.wait_sent(lambda sent: len(pageviews(sent)) == 1, "the landing pageview")
    browser.execute_script("location.hash = 'one'")
    browser.execute_script("location.hash = 'two'")
    # A real navigation after them: any pageview of theirs would have been sent before its own.
    step(browser, site, "history.pushState({}, '', '/next')", "/next", 1)

    rows = site.wait_rows(lambda rows: len(pageviews(rows)) >= 2, "the pageviews")
    assert [row["url"] for row in pageviews(rows)] == [site.url("/"), site.url("/next")]


def test_hash_routing_stores_a_pageview_per_hash_change(site, browser):
    site.page("/", document(site.script(hash_routing=True)))
    browser.get(site.url("/"))
    site.wait_sent(lambda sent: len(pageviews(sent)) == 1, "the landing pageview")
    step(browser, site, "location.hash = 'one'", "/#one", 1)
    step(browser, site, "location.hash = 'two'", "/#two", 2)

    rows = site.wait_rows(lambda rows: len(pageviews(rows)) == 3, "three pageviews")
    assert [row["url"] for row in pageviews(rows)] == [site.url("/"), site.url("/#one"), site.url("/#two")]


def test_calls_queued_before_the_script_loads_are_stored(site, browser):
    early = f"<script>{STUB} sluice('event', 'early', {{plan: 'pro', seats: 3}});</script>"
    site.page("/", document(early + site.script()))
    browser.get(site.url("/"))

    rows = site.wait_rows(lambda rows: named(rows, "early"), "the early event")
    (row,) = named(rows, "early")
    assert row["properties"] == {"plan": "pro", "seats": 3}
    assert row["url"] == site.url("/")
    assert len(pageviews(rows)) == 1


def test_a_queued_consent_refusal_applies_before_the_first_pageview(site, browser):
    refusal = f"<script>{STUB} sluice('consent', false); sluice('event', 'early');</script>"
    site.page("/", document(refusal + site.script()))
    browser.get(site.url("/"))

    rows = site.drain(browser)
    assert site.sent() == [] and rows == []


def test_consent_given_after_a_refusal_at_load_sends_the_landing_pageview(site, browser):
    """A consent banner's flow: the site queues a refusal before the script loads, the visitor then
    accepts; the page they landed on is counted once, and events refused meanwhile never are."""
    refusal = f"<script>{STUB} sluice('consent', false); sluice('event', 'early');</script>"
    site.page("/landing", document(refusal + site.script()))
    browser.get(site.url("/landing"))
    browser.execute_script("sluice('event', 'refused'); sluice('consent', true); sluice('event', 'accepted')")

    rows = site.wait_rows(lambda rows: named(rows, "accepted"), "the event after consent")
    assert [(row["event"], row["path"]) for row in rows] == [("pageview", "/landing"), ("accepted", "/landing")]
    assert [e["event"] for e in site.sent()] == ["pageview", "accepted"]


def test_data_404_and_the_404_call_store_404_events(site, browser):
    site.page("/missing", document(site.script(**{"404": True}), title="Not found"))
    site.page("/gone", document(site.script() + "<script>addEventListener('load', () => sluice('404'))</script>"))
    browser.get(site.url("/missing"))
    browser.get(site.url("/gone"))

    rows = site.wait_rows(lambda rows: len(named(rows, "404")) == 2, "two 404 events")
    assert sorted((row["path"], row["properties"]) for row in named(rows, "404")) == [("/gone", {}), ("/missing", {})]
    assert {row["path"] for row in pageviews(rows)} == {"/missing", "/gone"}
