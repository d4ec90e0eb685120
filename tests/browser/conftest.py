"""The tracking script in a real browser: headless Chromium (tests/browser/chromium.py) whose every
request goes through a proxy (tests/browser/proxy.py) to pages the tests define and to an API server
of this folder's own, whose events go through Kafka and the session's ingest worker to ClickHouse."""

import uuid
from itertools import count

import httpx
import pytest

from tests.browser import chromium
from tests.browser.proxy import Proxy
from tests.browser.site import Site
from tests.conftest import running_api
from tests.system_packages import require

FIRST_PARTY_PATH = "/x"


@pytest.fixture(scope="session")
def installed_chromium() -> None:
    """Chromium and chromedriver from Debian's packages, installed on first use."""
    require([chromium.CHROMIUM, chromium.CHROMEDRIVER], chromium.PACKAGES, "The browser tests")


@pytest.fixture(scope="session")
def browser_api(server_env, ingest_worker, tmp_path_factory):
    """An API server serving the first-party paths too; its events reach the session's ingest worker."""
    env = {
        **server_env,
        "SLUICE_PIXEL_PATH": FIRST_PARTY_PATH,
        # Every browser request reaches the API from 127.0.0.1, as do other runs' on this machine,
        # sharing one per-IP budget in Redis: it is not what these tests are about.
        "SLUICE_PIXEL_RATE_LIMIT": "60000000",
    }
    with running_api(env, tmp_path_factory.mktemp("browser-api")) as url:
        yield url


@pytest.fixture(scope="session")
def proxy(browser_api):
    proxy = Proxy(browser_api, f"sluice-{uuid.uuid4().hex[:8]}.example").start()
    yield proxy
    proxy.stop()


@pytest.fixture
def site(proxy, browser_api, tenants, clickhouse_query):
    """A fresh workspace whose pixel domain is a new host the proxy serves."""
    workspace = tenants.workspace()
    auth = {"Authorization": f"Bearer {tenants.key(workspace['id'])}"}
    host = f"shop-{uuid.uuid4().hex[:10]}.example"
    r = httpx.post(f"{browser_api}/api/v1/pixel/domains", headers=auth, json={"host": host}, timeout=30)
    assert r.status_code == 201, r.text
    proxy.pages[host] = {}
    yield Site(
        host,
        proxy.api_host,
        browser_api,
        workspace["id"],
        r.json()["data"]["id"],
        auth,
        proxy,
        clickhouse_query,
        proxy.mark(),
    )
    del proxy.pages[host]


@pytest.fixture
def open_browser(installed_chromium, proxy, tmp_path):
    """Starts a fresh browser (new profile, so no state is shared) with the given
    chromium.Browsing settings; all are closed after the test."""
    drivers, numbers = [], count()

    def start(**settings):
        driver = chromium.start(
            chromium.Browsing(proxy.address, **settings), tmp_path / f"chromedriver-{next(numbers)}.log"
        )
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def browser(open_browser):
    """An ordinary visitor's browser."""
    return open_browser()
