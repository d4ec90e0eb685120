"""Headless Chromium through Selenium, from Debian's `chromium` and `chromium-driver` packages
(installed with apt-get on first use: tests/system_packages.py), never from Selenium Manager downloads.

Every request goes through the test proxy (tests/browser/proxy.py), loopback included. The browser
passes for a person's: a desktop Chrome User-Agent (the server drops HeadlessChrome as a bot) and,
unless a test asks otherwise, no navigator.webdriver (the script ignores automated browsers).
"""

from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ["chromium", "chromium-driver"]
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
WIDTH, HEIGHT = 1200, 800
# Quiet: no background calls of Chromium's own through the proxy, no first-run work, and no
# HTTPS upgrade attempts of the plain-http test origins (each would wait on a refused tunnel first).
QUIET = [
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,MediaRouter,OptimizationHints",
]

GPC_ON = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true, configurable: true});"


@dataclass(frozen=True)
class Browsing:
    """How one browser is set up; the defaults are an ordinary visitor's."""

    proxy: str  # http://127.0.0.1:<port>
    hide_automation: bool = True  # navigator.webdriver false
    do_not_track: bool = False  # Chromium's "Send a Do Not Track request" setting
    # Chromium has no setting for Global Privacy Control (navigator.globalPrivacyControl is
    # undefined, or false behind a flag): emulated before any page script runs.
    global_privacy_control: bool = False


def options(browsing: Browsing) -> webdriver.ChromeOptions:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        f"--user-agent={USER_AGENT}",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--proxy-server={browsing.proxy}",
        "--proxy-bypass-list=<-loopback>",  # loopback through the proxy too
        *QUIET,
    ):
        opts.add_argument(flag)
    if browsing.hide_automation:
        opts.add_argument("--disable-blink-features=AutomationControlled")
    opts.add_experimental_option("prefs", {"enable_do_not_track": browsing.do_not_track})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


def start(browsing: Browsing, log_path: Path) -> webdriver.Chrome:
    service = Service(str(CHROMEDRIVER), log_output=str(log_path))
    driver = webdriver.Chrome(options=options(browsing), service=service)
    driver.set_page_load_timeout(90)
    driver.set_script_timeout(60)
    # A download link's click must leave the page where it is, with nothing written to disk.
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "deny"})
    if browsing.global_privacy_control:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": GPC_ON})
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Sec-GPC": "1"}})
    return driver
