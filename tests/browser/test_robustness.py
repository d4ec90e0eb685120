"""The page never suffers for the script, in a real browser: a script its Content-Security-Policy
blocks, and an API that is down (connection closed, or a gateway's 502), leave the page's own
JavaScript running with no uncaught exception and nothing from the script on the console."""

import uuid

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.site import STUB, document, script_errors

PAGE_TIMEOUT = 60
# The page's own code: calls the script (or its stub) on load, then marks the page as working.
# It also records uncaught errors and unhandled rejections, and keeps the promise of every fetch so
# the test can wait for the script's requests to have failed.
PAGE_JS = f"""<script>
{STUB}
window.problems = [];
addEventListener('error', e => problems.push(String(e.message)));
addEventListener('unhandledrejection', e => problems.push('unhandled: ' + String(e.reason)));
window.fetches = [];
const realFetch = window.fetch;
window.fetch = function () {{
  const answer = realFetch.apply(this, arguments);
  fetches.push(answer.then(() => 'answered', () => 'failed'));
  return answer;
}};
sluice('event', 'early');
addEventListener('load', () => {{ sluice('event', 'loaded'); document.body.dataset.ready = 'yes'; }});
</script>"""
# Resolves once every fetch so far has settled and a few tasks have run after it, time enough for
# the script's handlers and for an unhandled rejection to be reported.
SETTLED = """
const done = arguments[arguments.length - 1];
Promise.allSettled(window.fetches).then(async outcomes => {
  for (let i = 0; i < 3; i++) await new Promise(r => setTimeout(r, 0));
  done({outcomes: outcomes.map(o => o.value), problems: window.problems});
});
"""


def wait_until_working(browser) -> None:
    WebDriverWait(browser, PAGE_TIMEOUT).until(lambda d: d.execute_script("return document.body.dataset.ready"))


def test_a_script_blocked_by_the_pages_policy_leaves_the_page_working(site, browser):
    policy = "<meta http-equiv='Content-Security-Policy' content=\"script-src 'self' 'unsafe-inline'\">"
    site.page("/", document(PAGE_JS + site.script(), head=policy))
    browser.get(site.url("/"))
    wait_until_working(browser)

    entries = browser.get_log("browser")
    script_url = f"http://{site.api_host}/pixel.js"
    assert any("Content Security Policy" in e["message"] and script_url in e["message"] for e in entries), entries
    assert script_errors(entries, script_url) == []
    assert browser.execute_script("return window.problems") == []
    assert site.requests(lambda s: s.route.endswith("pixel.js")) == []  # blocked before any request


@pytest.mark.parametrize("failure", ["refused", "bad_gateway"])
def test_an_api_that_is_down_leaves_the_page_working_and_stores_nothing(site, browser, failure):
    down = f"down-{uuid.uuid4().hex[:8]}.example"
    site.proxy.down[down] = failure
    site.page("/", document(PAGE_JS + site.script(api=f"http://{down}")))
    browser.get(site.url("/"))
    wait_until_working(browser)

    settled = browser.execute_async_script(SETTLED)
    assert settled == {"outcomes": ["failed" if failure == "refused" else "answered"], "problems": []}
    (config,) = site.requests(lambda s: s.host == down)
    assert config.route == "/api/v1/pixel/config"
    assert script_errors(browser.get_log("browser"), f"http://{site.api_host}/pixel.js") == []
    rows = site.drain(browser)
    assert site.requests(lambda s: s.host == down) == [config]  # nothing sent after it failed
    assert site.sent() == [] and rows == []
