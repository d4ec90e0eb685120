"""User-Agent parsing: browser, OS, device class, brand/model and the bot flag, every field checked."""

import json
import re
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.pixel.user_agents import BOTS, CACHE_SIZE, DEVICES, HEADLESS, TOOL, Agent, parse

CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


def human(browser, version, os, os_version, device, brand="", model=""):
    return Agent(browser, version, os, os_version, device, brand, model, False)


def bot(name, version="", os="", os_version=""):
    return Agent(name, version, os, os_version, "bot", "", "", True)


TABLE = [
    ("chrome-windows-10", CHROME_WIN, human("Chrome", "120.0", "Windows", "10", "desktop")),
    ("edge-windows", CHROME_WIN + " Edg/120.0.2210.91", human("Edge", "120.0", "Windows", "10", "desktop")),
    ("opera-windows", CHROME_WIN + " OPR/105.0.0.0", human("Opera", "105.0", "Windows", "10", "desktop")),
    (
        "firefox-windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
        human("Firefox", "121.0", "Windows", "10", "desktop"),
    ),
    (
        "safari-macos",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
        human("Safari", "17.1", "Mac OS X", "10.15", "desktop", "Apple", "Mac"),
    ),
    (
        "edge-macos",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
        human("Edge", "124.0", "Mac OS X", "10.15", "desktop", "Apple", "Mac"),
    ),
    ("safari-iphone-ios-17", IPHONE, human("Mobile Safari", "17.4", "iOS", "17.4", "mobile", "Apple", "iPhone")),
    (
        "safari-ipad",
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
        human("Mobile Safari", "17.4", "iOS", "17.4", "tablet", "Apple", "iPad"),
    ),
    (
        "chrome-ipad",
        "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
        human("Chrome Mobile iOS", "120.0", "iOS", "17.2", "tablet", "Apple", "iPad"),
    ),
    (
        "chrome-android-phone",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        human("Chrome Mobile", "120.0", "Android", "14", "mobile", "Google", "Pixel 8"),
    ),
    (
        "chrome-android-tablet",
        "Mozilla/5.0 (Linux; Android 11; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        human("Chrome", "124.0", "Android", "11", "tablet", "Lenovo", "TB-J606F"),
    ),
    # ua-parser knows this Galaxy Tab only as a generic Android tablet: no brand, no model.
    (
        "chrome-android-generic-tablet",
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        human("Chrome", "120.0", "Android", "13", "tablet"),
    ),
    (
        "samsung-internet-android-phone",
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
        human("Samsung Internet", "23.0", "Android", "13", "mobile", "Samsung", "SM-S918B"),
    ),
    # Android 10+ reduced UA: the model is always "K", which says nothing.
    (
        "chrome-android-reduced",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        human("Chrome Mobile", "120.0", "Android", "10", "mobile"),
    ),
    (
        "chrome-os",
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        human("Chrome", "120.0", "Chrome OS", "14541.0", "desktop"),
    ),
    (
        "firefox-linux",
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        human("Firefox", "120.0", "Linux", "", "desktop"),
    ),
    (
        "ie-11",
        "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko",
        human("IE", "11.0", "Windows", "7", "desktop"),
    ),
    # A phone brand that ends in "bot" is not a crawler.
    (
        "cubot-phone",
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        human("Chrome Mobile", "120.0", "Android", "10", "mobile", "Cubot", "X30"),
    ),
    (
        "smart-tv",
        "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "76.0.3809.146/6.0 TV Safari/537.36",
        human("Safari", "", "Tizen", "6.0", "tv", "Samsung", "SMART-TV"),
    ),
    (
        "playstation",
        "Mozilla/5.0 (PlayStation 4 3.11) AppleWebKit/537.73 (KHTML, like Gecko)",
        human("", "", "", "", "console", "Sony", "PlayStation 4"),
    ),
    ("googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", bot("Googlebot", "2.1")),
    (
        "googlebot-smartphone",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.6099.71 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        bot("Googlebot", "2.1", "Android", "6.0"),
    ),
    ("bingbot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", bot("bingbot", "2.0")),
    (
        "gptbot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)",
        bot("GPTBot", "1.0"),
    ),
    ("curl", "curl/8.4.0", bot("curl", "8.4")),
    ("python-requests", "python-requests/2.31.0", bot("python-requests", "2.31")),
    (
        "headless-chrome",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        bot("HeadlessChrome", "120.0", "Linux"),
    ),
    ("empty", "", bot("")),
    ("unknown", "SomethingNew (Toaster OS)", human("", "", "", "", "other")),
]


@pytest.mark.parametrize(("ua", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_every_field_is_read_from_the_user_agent(ua, expected):
    assert parse(ua) == expected


BOT_NAMES = [
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "FacebookBot"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "AhrefsBot"),
    ("Wget/1.21.4", "Wget"),
    ("python-httpx/0.27.0", "python-httpx"),
    ("Python-urllib/3.11", "Python-urllib"),
    ("aiohttp/3.9.1", "aiohttp"),
    ("Go-http-client/1.1", "Go-http-client"),
    ("Java/17.0.1", "Java"),
    ("okhttp/4.12.0", "okhttp"),
    ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "node-fetch"),
    ("axios/1.6.2", "axios"),
    ("undici", "undici"),
    ("PostmanRuntime/7.36.0", "PostmanRuntime"),
    ("insomnia/8.6.1", "insomnia"),
    ("Jakarta Commons-HttpClient/3.1", "HttpClient"),
    (
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
        "PhantomJS",
    ),
    (CHROME_WIN + " Chrome-Lighthouse", "Chrome-Lighthouse"),
    (CHROME_WIN + " webdriver", "webdriver"),
    # Names from the crawler list's match when nothing else names the bot.
    ("Mozilla/4.0 (compatible; Synapse)", "Synapse"),
    ("Mozilla/3.0 (compatible; WebCapture 2.0; Windows)", "WebCapture"),
]


@pytest.mark.parametrize(("ua", "name"), BOT_NAMES, ids=[name for _, name in BOT_NAMES])
def test_crawlers_scripts_and_headless_browsers_are_bots_named_by_their_token(ua, name):
    agent = parse(ua)
    assert (agent.is_bot, agent.device, agent.browser) == (True, "bot", name)
    assert (agent.device_brand, agent.device_model) == ("", "")


DEVICE_RULES = [
    (
        "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.79 Safari/537.36",
        "tv",
    ),
    ("Roku/DVP-9.10 (519.10E04111A)", "tv"),
    (
        "Mozilla/5.0 (CrKey armv7l 1.5.16041) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/31.0.1650.0 Safari/537.36",
        "tv",
    ),
    ("Mozilla/5.0 (Linux; Android 12; BRAVIA 4K VH2 Build/STT1) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", "tv"),
    (
        "Mozilla/5.0 (Linux; Android 9; AFTKA Build/PS7633.3445N; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36",
        "tv",
    ),
    (
        "Mozilla/5.0 (DirectFB; Linux armv7l) AppleWebKit/534.26+ (KHTML, like Gecko) Version/5.0 "
        "Safari/534.26+ HbbTV/1.1.1",
        "tv",
    ),
    ("AppleTV11,1/11.1", "tv"),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041",
        "console",
    ),
    ("Mozilla/5.0 (Nintendo Switch; WifiWebAuthApplet) AppleWebKit/606.4 (KHTML, like Gecko) NF/6.0.1.15.4", "console"),
    ("Mozilla/5.0 (PlayStation Vita 1.81) AppleWebKit/531.22.8 (KHTML, like Gecko) Silk/3.2", "console"),
    (
        "Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) AppleWebKit/535.19 (KHTML, like Gecko) "
        "Silk/3.25 like Chrome/34.0.1847.137 Safari/535.19 Silk-Accelerated=true",
        "tablet",
    ),
    ("Mozilla/5.0 (Mobile; Tablet; rv:26.0) Gecko/26.0 Firefox/26.0", "tablet"),
    ("Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0; Tablet PC 2.0)", "desktop"),
    (
        "Mozilla/5.0 (compatible; MSIE 9.0; Windows Phone OS 7.5; Trident/5.0; IEMobile/9.0; NOKIA; Lumia 800)",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPod touch; CPU iPhone OS 12_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/12.1 Mobile/15E148 Safari/604.1",
        "mobile",
    ),
    ("Nokia6230i/2.0 (03.80) Profile/MIDP-2.0 Configuration/CLDC-1.1", "mobile"),
    ("Mozilla/5.0 (X11; FreeBSD amd64; rv:120.0) Gecko/20100101 Firefox/120.0", "desktop"),
    ("Lynx/2.8.9rel.1 libwww-FM/2.14", "other"),
]


@pytest.mark.parametrize(("ua", "device"), DEVICE_RULES, ids=[f"{d}-{i}" for i, (_, d) in enumerate(DEVICE_RULES)])
def test_device_class_rules(ua, device):
    agent = parse(ua)
    assert (agent.device, agent.is_bot) == (device, False)


def test_generic_brands_become_empty():
    agent = parse("Roku/DVP-9.10 (519.10E04111A)")  # ua-parser: brand "Generic_Inettv"
    assert (agent.device_brand, agent.device_model) == ("", "")


def _crawler_list():
    return json.loads(resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text())


def test_every_example_the_crawler_list_ships_is_a_bot():
    examples = {ua for entry in _crawler_list() for ua in entry["instances"]}
    assert len(examples) > 1000
    assert [ua for ua in examples if not parse(ua).is_bot] == []


def test_the_rust_bot_set_decides_as_python_re_does():
    """ua-parser-rs's regex engine runs the list's patterns; Python's `re` is what the list is written for."""
    python = re.compile("|".join(entry["pattern"] for entry in _crawler_list()))
    examples = sorted({ua for entry in _crawler_list() for ua in entry["instances"]})
    others = [ua for _, ua, _ in TABLE] + [ua for ua, _ in DEVICE_RULES] + [ua for ua, _ in BOT_NAMES]
    for ua in examples + others:
        expected = bool(python.search(ua) or TOOL.match(ua) or HEADLESS.search(ua))
        assert (BOTS.extract(ua) is not None) == expected, ua


def test_results_are_memoised():
    assert parse.cache_info().maxsize == CACHE_SIZE
    assert parse(CHROME_WIN) is parse(CHROME_WIN)


def test_lone_surrogates_do_not_raise():
    assert parse("curl/8.4.0 \ud800").browser == "curl"


FRAGMENTS = [
    "Mozilla/5.0",
    "(Windows NT 10.0; Win64; x64)",
    "(Linux; Android 14; Pixel 8)",
    "(iPad; CPU OS 17_4 like Mac OS X)",
    "(SMART-TV; LINUX; Tizen 6.0)",
    "(PlayStation 4 3.11)",
    "AppleWebKit/537.36 (KHTML, like Gecko)",
    "Chrome/120.0.0.0",
    "Mobile",
    "Safari/537.36",
    "Googlebot/2.1",
    "curl/8.4.0",
    "HeadlessChrome/120",
    "bot",
    "",
]


@given(st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS)).map(" ".join)))
def test_any_text_parses_to_an_allowed_device_and_never_raises(ua):
    agent = parse(ua)
    assert agent.device in DEVICES
    assert agent.is_bot == (agent.device == "bot")
