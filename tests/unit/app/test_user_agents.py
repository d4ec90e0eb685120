"""User-Agent parsing: browser family, major version, OS, device class and the bot flag."""

import pytest

from app.pixel.user_agents import Agent, parse

CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
TABLE = [
    (CHROME_WIN, Agent("Chrome", "120", "Windows", "desktop", False)),
    (CHROME_WIN + " Edg/120.0.2210.91", Agent("Edge", "120", "Windows", "desktop", False)),
    (CHROME_WIN + " OPR/105.0.0.0", Agent("Opera", "105", "Windows", "desktop", False)),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
        Agent("Firefox", "121", "Windows", "desktop", False),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
        Agent("Safari", "17", "macOS", "desktop", False),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.2 Mobile/15E148 Safari/604.1",
        Agent("Safari", "17", "iOS", "mobile", False),
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
        Agent("Chrome", "120", "iOS", "tablet", False),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        Agent("Chrome", "120", "Android", "mobile", False),
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        Agent("Chrome", "120", "Android", "tablet", False),
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        Agent("Samsung Internet", "23", "Android", "mobile", False),
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        Agent("Chrome", "120", "Chrome OS", "desktop", False),
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        Agent("Firefox", "120", "Linux", "desktop", False),
    ),
    (
        "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko",
        Agent("Internet Explorer", "11", "Windows", "desktop", False),
    ),
    # A phone brand that ends in "bot" is not a crawler.
    (
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        Agent("Chrome", "120", "Android", "mobile", False),
    ),
]
BOTS = [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bingbot"),
    (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)",
        "GPTBot",
    ),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "facebookexternalhit"),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        "HeadlessChrome",
    ),
    ("curl/8.4.0", "curl"),
    ("Wget/1.21.4", "Wget"),
    ("python-requests/2.31.0", "python-requests"),
    ("python-httpx/0.27.0", "python-httpx"),
    ("Go-http-client/1.1", "Go-http-client"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "AhrefsBot"),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
        "Safari/537.36 Chrome-Lighthouse",
        "Chrome",
    ),
]


@pytest.mark.parametrize(("ua", "expected"), TABLE, ids=[e.browser + "-" + e.device for _, e in TABLE])
def test_browser_os_and_device_are_read_from_the_user_agent(ua, expected):
    assert parse(ua) == expected


@pytest.mark.parametrize(("ua", "name"), BOTS, ids=[name for _, name in BOTS])
def test_crawlers_headless_browsers_and_scripts_are_bots(ua, name):
    agent = parse(ua)
    assert agent.is_bot
    assert agent.device == "bot"
    assert agent.browser == name


def test_a_missing_user_agent_is_a_bot():
    assert parse("") == Agent("", "", "", "bot", True)


def test_an_unknown_user_agent_is_other_not_an_error():
    assert parse("SomethingNew (Toaster OS)") == Agent("", "", "", "other", False)
