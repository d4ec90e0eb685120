"""Pixel enrichment: a User-Agent header → browser, OS, device class, brand/model and bot flag.

Maintained data does the recognising: ua-parser with the uap-core rules (ua-parser-builtins) names
the browser, OS and device, through its native resolver (ua-parser-rs: ~15 µs a string against
~1 ms for the pure-Python one, bench/user_agents.py); the crawler-user-agents list names the bots,
as does ua-parser's "Spider" device. Ours are the device class (ua-parser has none) and the bot
rules the list leaves out: scripted clients, headless browsers, the empty header. The same few
thousand strings repeat all day, so results are memoised.
"""

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import ua_parser_rs
from ua_parser import OS, Device, Domain, UserAgent, load_lazy_builtins
from ua_parser.regex import Resolver

# Distinct UA strings seen in a day by a busy site number in the low thousands.
CACHE_SIZE = 8192
DEVICES = frozenset({"desktop", "mobile", "tablet", "tv", "console", "bot", "other"})

# Bots the crawler list does not name (or may drop): HTTP libraries and CLI tools, which lead
# the string, and automation, anywhere in it.
TOOLS = (
    r"curl|Wget|python-requests|python-urllib3?|aiohttp|python-httpx|httpx|Go-http-client|Java|okhttp|"
    r"node-fetch|axios|undici|PostmanRuntime|insomnia"
)
AUTOMATION = r"HeadlessChrome|PhantomJS|Puppeteer|Playwright|Selenium|webdriver|Chrome-Lighthouse|Lighthouse|HttpClient"
VERSION = r"(?:/v?(\d+)(?:\.(\d+))?)?"
TOOL = re.compile(rf"^({TOOLS})\b{VERSION}", re.IGNORECASE)
HEADLESS = re.compile(rf"({AUTOMATION}){VERSION}", re.IGNORECASE)
# A crawler's own token, when ua-parser has no name for it: "SomethingBot/2.1".
BOT_NAME = re.compile(rf"([A-Za-z][\w.-]*?(?:bot|crawler|spider|Slurp))\b{VERSION}", re.IGNORECASE)
PRODUCT = re.compile(rf"^((?!Mozilla\b)[A-Za-z][\w.-]*){VERSION}")  # "facebookexternalhit/1.1 (...)"
NAME = re.compile(r"[A-Za-z][\w .-]*[\w]")  # a name inside a crawler pattern's match: "Googlebot/" → "Googlebot"

# Device class, first rule that holds wins: TVs and consoles also say "Android", "Linux", "Windows".
# Case-sensitive on purpose: with IGNORECASE the TV rule alone costs 16 µs a string.
TV = re.compile(
    r"S(?:mart-?TV|MART-TV)|Tizen.{0,80}TV|Web0S|webOS.{0,40}TV|Apple ?TV|\bRoku\b|CrKey|BRAVIA|HbbTV|"
    r"Android TV|GoogleTV|\bAFT[A-Z]"  # AFT…: Amazon Fire TV models
)
CONSOLE = re.compile(r"PlayStation|Xbox|Nintendo")
TABLET = re.compile(r"iPad|Kindle|Silk/|Tablet(?! PC)|PlayBook|Nexus (?:7|9|10)\b")  # "Tablet PC": Windows laptops
MOBILE = re.compile(r"Mobi|iPhone|iPod|Windows Phone|BlackBerry|BB10|Opera Mini|Symbian|MIDP")
MOBILE_OSES = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "Symbian OS", "Firefox OS", "KaiOS"})
DESKTOP = re.compile(r"Windows|Macintosh|Mac OS X|Mac_PowerPC|X11|Linux|CrOS|BSD|SunOS")
# ua-parser's placeholders for "some Android phone", "some TV", "a crawler": no brand known.
GENERIC_BRANDS = ("Generic", "Spider")

_RESOLVER = Resolver(load_lazy_builtins())


def _bot_matcher() -> ua_parser_rs.UserAgentExtractor:
    """The crawler list's ~1,500 patterns and ours as one Rust regex set; a match's family is its text.

    1.5 µs a string, where one Python alternation of the list costs ~300 µs and chunks of 25 (the
    list's own is_crawler) ~100 µs, for the same decisions (tests check every example it ships).
    """
    data = json.loads(resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text())
    patterns = [entry["pattern"] for entry in data] + [rf"(?i)^(?:{TOOLS})\b", rf"(?i){AUTOMATION}"]
    return ua_parser_rs.UserAgentExtractor((f"({pattern})", None, None, None, None, None) for pattern in patterns)


BOTS = _bot_matcher()


@dataclass(frozen=True, slots=True)
class Agent:
    browser: str  # ua-parser family ("Chrome", "Mobile Safari"), a bot's or tool's name; "" when unknown
    browser_version: str  # "120.0"; "120" when no minor; "" when unknown
    os: str  # ua-parser family ("Windows", "iOS", "Mac OS X"); "" when unknown
    os_version: str  # "10", "17.4"; "" when unknown
    device: str  # one of DEVICES
    device_brand: str  # "Apple", "Samsung"; "" when unknown or generic
    device_model: str  # "iPhone", "SM-S918B"; "" when unknown or generic
    is_bot: bool


def _version(major: str | None, minor: str | None) -> str:
    if not major:
        return ""
    return f"{major}.{minor}" if minor else major


def _named(match: re.Match[str] | None) -> tuple[str, str] | None:
    return (match.group(1), _version(match.group(2), match.group(3))) if match else None


def _bot_name(ua: str, listed: str, browser: UserAgent | None, device: Device | None) -> tuple[str, str]:
    """Our rules name the tools; then ua-parser's name for a crawler; then the crawler's own token."""
    known = browser if browser and browser.family != "Other" else None
    if named := _named(TOOL.match(ua) or HEADLESS.search(ua)):
        return named
    if known and device and device.family == "Spider":
        return known.family, _version(known.major, known.minor)
    if named := _named(BOT_NAME.search(ua)):
        return named
    if listed and (match := NAME.search(listed)):
        return match.group(), ""
    if known:
        return known.family, _version(known.major, known.minor)
    return _named(PRODUCT.match(ua)) or ("", "")


def _device_class(ua: str, os_family: str) -> str:
    if TV.search(ua):
        return "tv"
    if CONSOLE.search(ua):
        return "console"
    if TABLET.search(ua) or (os_family == "Android" and "Mobile" not in ua):
        return "tablet"
    if MOBILE.search(ua) or os_family in MOBILE_OSES:
        return "mobile"
    return "desktop" if DESKTOP.search(ua) else "other"


def _brand_model(device: Device | None) -> tuple[str, str]:
    if device is None or not device.brand or device.brand.startswith(GENERIC_BRANDS):
        return "", ""
    return device.brand, device.model or ""


def _parse(ua: str) -> Agent:
    result = _RESOLVER(ua, Domain.ALL)
    browser, system, device = result.user_agent, result.os or OS(), result.device
    os_family = "" if system.family == "Other" else system.family
    os_version = _version(system.major, system.minor) if os_family else ""
    listed = BOTS.extract(ua)
    if not ua or listed or (device and device.family == "Spider"):
        name, version = _bot_name(ua, listed.family if listed else "", browser, device)
        return Agent(name, version, os_family, os_version, "bot", "", "", True)
    family = "" if browser is None or browser.family == "Other" else browser.family
    version = _version(browser.major, browser.minor) if browser and family else ""
    brand, model = _brand_model(device)
    return Agent(family, version, os_family, os_version, _device_class(ua, os_family), brand, model, False)


@lru_cache(maxsize=CACHE_SIZE)
def parse(ua: str) -> Agent:
    """Never raises; an empty string is a bot (every browser sends a User-Agent)."""
    try:
        return _parse(ua)
    except UnicodeEncodeError:  # lone surrogates: the Rust matchers take UTF-8 only
        return _parse(ua.encode("utf-8", "replace").decode("utf-8"))
