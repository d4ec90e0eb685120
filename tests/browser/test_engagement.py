"""Engagement measured in a real browser: how long a page was in use and how far it was scrolled,
sent once when the page is left, for the pageview it belongs to.

Staying on a page is the behaviour measured, so these tests do wait a fixed time (STAY_SECONDS);
every other wait is on a condition, and the upper bound on engaged time is what the test itself
measured around the visit, never a constant."""

import time

from tests.browser.site import document, named

STAY_SECONDS = 3.0
# engaged_ms is at least the stay after the scroll, less what two clocks sampled a few ms apart
# can disagree on (Date.now() in the page, time.monotonic() here).
STAY_FLOOR_MS = 2_800
TALL_PAGE = "<style>html, body { margin: 0 }</style>", "<div style='height: 400vh'>a long article</div>"


def test_a_page_read_to_three_quarters_sends_one_engagement_when_left(site, browser):
    head, body = TALL_PAGE
    site.page("/article", document(body + site.script(), head=head))
    started = time.monotonic()
    browser.get(site.url("/article"))
    # The page is four windows tall: the top of the third window shows the first three quarters.
    browser.execute_script("window.scrollTo(0, 2 * window.innerHeight)")
    time.sleep(STAY_SECONDS)
    browser.get(site.url("/other"))
    visit_ms = (time.monotonic() - started) * 1000

    rows = site.wait_rows(lambda rows: named(rows, "engagement"), "the engagement")
    (pageview,), (engagement,) = named(rows, "pageview"), named(rows, "engagement")
    props = engagement["properties"]
    assert props["pageview_id"] == pageview["properties"]["pageview_id"]
    assert engagement["url"] == pageview["url"] == site.url("/article")
    assert abs(props["scroll_depth"] - 75) <= 3, props
    # At least the stay; at most the whole visit as measured from here, which brackets it.
    assert STAY_FLOOR_MS <= props["engaged_ms"] <= visit_ms, (props, visit_ms)
    assert len(named(site.drain(browser), "engagement")) == 1
    assert len(named(site.sent(), "engagement")) == 1


def test_an_spa_navigation_sends_the_previous_pages_engagement(site, browser):
    head, body = TALL_PAGE
    site.page("/", document(body + site.script(), head=head))
    started = time.monotonic()
    browser.get(site.url("/"))
    browser.execute_script("window.scrollTo(0, document.documentElement.scrollHeight)")  # to the end
    time.sleep(STAY_SECONDS)
    browser.execute_script("history.pushState({}, '', '/next')")
    site.wait_sent(lambda sent: named(sent, "engagement"), "the first page's engagement")
    visit_ms = (time.monotonic() - started) * 1000

    rows = site.wait_rows(lambda rows: named(rows, "engagement") and len(named(rows, "pageview")) == 2, "both")
    first, second = named(rows, "pageview")
    (engagement,) = named(rows, "engagement")
    props = engagement["properties"]
    assert props["pageview_id"] == first["properties"]["pageview_id"] != second["properties"]["pageview_id"]
    assert (engagement["url"], second["url"]) == (site.url("/"), site.url("/next"))
    assert props["scroll_depth"] == 100
    assert STAY_FLOOR_MS <= props["engaged_ms"] <= visit_ms, (props, visit_ms)


# The page's clock, moved forward by the test instead of waited for: pixel.js reads Date.now() for
# every measurement, so 40 s of idleness or a 31-minute absence take no time to test.
CLOCK = """<script>(function () {
  var real = Date.now, shift = 0;
  Date.now = function () { return real() + shift; };
  window.advanceClock = function (ms) { shift += ms; };
})();</script>"""


def engagement_columns(site) -> list[tuple]:
    """What ClickHouse computed from the stored engagement events: (pageview_id, engaged_ms, scroll_depth)."""
    return site.query(
        "SELECT pageview_id, engaged_ms, scroll_depth FROM events "
        "WHERE workspace_id = {ws:UInt64} AND event = 'engagement' ORDER BY time",
        {"ws": site.workspace_id},
    )


def test_engaged_time_stops_thirty_seconds_after_the_last_input(site, browser):
    head, body = TALL_PAGE
    site.page("/idle", document(body + site.script(), head=head + CLOCK))
    started = time.monotonic()
    browser.get(site.url("/idle"))
    site.wait_sent(lambda sent: named(sent, "pageview"), "the pageview")
    before_shift_ms = (time.monotonic() - started) * 1000
    browser.execute_script("advanceClock(40000)")  # 40 s without any input
    browser.get(site.url("/other"))

    rows = site.wait_rows(lambda rows: named(rows, "engagement"), "the engagement")
    (pageview,), (engagement,) = named(rows, "pageview"), named(rows, "engagement")
    # Engaged from the load until 30 s after it (the load counts as input), never the 40 s idle.
    assert 30_000 <= engagement["properties"]["engaged_ms"] <= 30_000 + before_shift_ms, engagement
    pageview_id = pageview["properties"]["pageview_id"]
    # The columns ClickHouse fills from it; never scrolled, a page four windows tall was seen to 25 %.
    assert engagement_columns(site) == [(pageview_id, engagement["properties"]["engaged_ms"], 25)]


def test_a_page_used_again_after_thirty_minutes_counts_a_new_pageview_first(site, browser):
    site.page("/back", document("<p>a short page</p>" + site.script(), head=CLOCK))
    browser.get(site.url("/back"))
    site.wait_sent(lambda sent: named(sent, "pageview"), "the pageview")
    browser.execute_script("advanceClock(31 * 60 * 1000)")  # away 31 minutes, the tab left open
    browser.find_element("tag name", "body").send_keys("x")  # then a key: the visitor is back

    sent = site.wait_sent(lambda sent: len(named(sent, "pageview")) == 2, "a second pageview")
    first, second = named(sent, "pageview")
    assert first["url"] == second["url"] == site.url("/back")
    assert first["properties"]["pageview_id"] != second["properties"]["pageview_id"]
    # The first pageview's engagement went before it: its 30 s, ended by idleness, not the absence.
    (engagement,) = named(sent, "engagement")
    assert engagement["properties"]["pageview_id"] == first["properties"]["pageview_id"]
    assert 30_000 <= engagement["properties"]["engaged_ms"] < 60_000
    assert sent.index(engagement) < sent.index(second)
    rows = site.wait_rows(lambda rows: len(named(rows, "pageview")) == 2, "both pageviews")
    assert {r["properties"]["pageview_id"] for r in named(rows, "pageview")} == {
        first["properties"]["pageview_id"],
        second["properties"]["pageview_id"],
    }
