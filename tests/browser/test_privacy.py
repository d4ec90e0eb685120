"""What a visitor's choices and the browser's nature do to the script, in a real browser: Do Not
Track and Global Privacy Control when the site respects them (nothing sent at all), consent
withdrawn and given again, and automated browsers (ignored unless the site allows them).

Chromium has a Do Not Track setting; it has no Global Privacy Control one, so GPC is emulated
(tests/browser/chromium.py): navigator.globalPrivacyControl is true and requests carry Sec-GPC: 1."""

import pytest

from tests.browser.site import SEND_TIMEOUT, STUB, document, named, wait_for

SIGNALS = {
    "do_not_track": ("navigator.doNotTrack", "1"),
    "global_privacy_control": ("navigator.globalPrivacyControl", True),
}

EVENT_ON_LOAD = "<script>addEventListener('load', () => sluice('event', 'x'))</script>"


def config_requests(site) -> list:
    return site.requests(lambda s: s.host == site.api_host and s.route.endswith("/config"))


@pytest.mark.parametrize("signal", SIGNALS)
def test_a_privacy_signal_stops_everything_when_the_site_respects_it(site, open_browser, signal):
    browser = open_browser(**{signal: True})
    site.page("/", document(site.script(respect_dnt=True) + EVENT_ON_LOAD))
    browser.get(site.url("/"))
    expression, value = SIGNALS[signal]
    assert browser.execute_script(f"return {expression}") == value  # the browser does send the signal

    rows = site.drain(browser)
    assert site.sent() == [] and rows == []
    assert len(config_requests(site)) == 1  # the sentinel page's: the page under test asked nothing


def test_do_not_track_alone_does_not_stop_the_script(site, open_browser):
    """Without data-respect-dnt the script sends; the server then applies the site's own setting
    (honouring the signals by default: tests/e2e/test_pixel_privacy.py), off here."""
    site.configure(honor_privacy_signals=False)
    browser = open_browser(do_not_track=True)
    site.page("/", document(site.script()))
    browser.get(site.url("/"))

    rows = site.wait_rows(lambda rows: named(rows, "pageview"), "the pageview")
    assert [row["url"] for row in rows] == [site.url("/")]
    assert all(seen.headers.get("dnt") == "1" for seen in site.track_requests())


def test_consent_withdrawn_stops_sending_until_given_again(site, browser):
    site.page("/", document(site.script()))
    browser.get(site.url("/"))
    site.wait_sent(lambda sent: named(sent, "pageview"), "the pageview")
    browser.execute_script("sluice('event', 'before'); sluice('consent', false); sluice('event', 'refused')")
    browser.execute_script("sluice('consent', true); sluice('event', 'after')")

    rows = site.wait_rows(lambda rows: named(rows, "after"), "the event after consent")
    # `before` was queued when consent was withdrawn: discarded with the queue.
    assert [row["event"] for row in rows] == ["pageview", "after"]
    assert [e["event"] for e in site.sent()] == ["pageview", "after"]


def test_an_automated_browser_is_ignored_unless_the_site_allows_it(site, open_browser):
    browser = open_browser(hide_automation=False)
    assert browser.execute_script("return navigator.webdriver") is True
    site.page("/ignored", document(site.script()))
    site.page("/allowed", document(site.script(allow_local=True)))
    browser.get(site.url("/ignored"))
    browser.get(site.url("/allowed"))

    rows = site.wait_rows(lambda rows: named(rows, "pageview"), "the allowed page's pageview")
    assert [row["path"] for row in rows] == ["/allowed"]
    assert [e["url"] for e in site.sent()] == [site.url("/allowed")]


def test_a_local_page_is_ignored_unless_the_site_allows_it(site, browser):
    """*.localhost reaches the proxy too (Chromium sends loopback through it when told to). No
    workspace can claim such a host, so the allowed page's config says disabled: it asks, no more."""
    ignored, allowed = (f"{name}-{site.host.split('.')[0]}.localhost" for name in ("ignored", "allowed"))
    site.proxy.pages[ignored] = {"/": document(f"<script>{STUB} sluice('event', 'x')</script>{site.script()}")}
    site.proxy.pages[allowed] = {"/": document(site.script(allow_local=True))}
    browser.get(f"http://{ignored}/")
    browser.get(f"http://{allowed}/")

    def asked_by(host: str) -> list:
        return site.requests(lambda s: s.host == site.api_host and s.headers.get("origin") == f"http://{host}")

    answered = wait_for(
        lambda: [s for s in asked_by(allowed) if s.status],
        bool,
        SEND_TIMEOUT,
        "the allowed local page's config request",
    )
    (config,) = asked_by(allowed)
    assert answered == [config]
    assert config.route == "/api/v1/pixel/config" and config.answer == b'{"enabled":false}'
    assert asked_by(ignored) == []
