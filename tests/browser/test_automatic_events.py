"""The events a site opts into with data-auto, from real clicks and submits: outbound links (even
though the click takes the page away), file downloads, and form submissions without their values."""

import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.site import document, named

NAVIGATION_TIMEOUT = 60


def test_an_outbound_click_is_stored_although_the_page_navigates_away(site, browser):
    link = '<a id="out" href="http://elsewhere.example/landing?from=shop">partner</a>'
    site.page("/", document(site.script(auto="outbound") + link))
    browser.get(site.url("/"))
    browser.find_element(By.ID, "out").click()
    WebDriverWait(browser, NAVIGATION_TIMEOUT).until(lambda d: d.current_url.startswith("http://elsewhere.example/"))

    rows = site.wait_rows(lambda rows: named(rows, "outbound_link"), "the outbound click")
    (row,) = named(rows, "outbound_link")
    assert row["properties"] == {"url": "http://elsewhere.example/landing?from=shop"}
    assert row["url"] == site.url("/")


def test_download_clicks_follow_the_sites_extensions(site, browser):
    links = "".join(f'<p><a id="{name}" href="/files/{name}">{name}</a></p>' for name in ("a.zip", "b.pdf", "c.fit"))
    # The site's list replaces the default one: .zip is no download here, .fit is.
    site.page("/", document(site.script(auto="download", download_extensions="pdf,fit") + links))
    browser.get(site.url("/"))
    for name in ("a.zip", "b.pdf", "c.fit"):
        browser.find_element(By.ID, name).click()

    rows = site.wait_rows(lambda rows: len(named(rows, "file_download")) == 2, "two downloads")
    assert [row["properties"] for row in named(rows, "file_download")] == [
        {"url": site.url("/files/b.pdf")},
        {"url": site.url("/files/c.fit")},
    ]
    assert browser.current_url == site.url("/")  # attachments: the page stayed


def test_a_form_submission_is_stored_without_any_field_value(site, browser):
    secrets = {"email": f"mail-{uuid.uuid4().hex}@example.org", "card": uuid.uuid4().hex, "note": uuid.uuid4().hex}
    fields = "".join(f'<input name="{name}" value="{value}">' for name, value in secrets.items())
    form = f'<form id="signup" name="newsletter" method="post" action="/other">{fields}<button id="send">Go</button>'
    site.page("/", document(site.script(auto="form") + form + "</form>"))
    browser.get(site.url("/"))
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, NAVIGATION_TIMEOUT).until(lambda d: d.find_elements(By.ID, "other"))

    rows = site.wait_rows(lambda rows: named(rows, "form_submit"), "the form submission")
    (row,) = named(rows, "form_submit")
    assert row["properties"] == {"form_id": "signup", "form_name": "newsletter"}
    assert secrets["card"] in site.requests(lambda s: s.route == "/other")[0].body.decode()  # the form did post them
    stored = repr(site.whole_rows())
    sent = b"".join(seen.body for seen in site.track_requests())
    for value in secrets.values():
        assert value not in stored and value.encode() not in sent
