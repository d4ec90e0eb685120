"""Traffic source and channel: GA4's default channel group over the referrer and UTM parameters."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.pixel.channels import (
    CATEGORIES,
    CHANNELS,
    GA4_CATEGORIES,
    Acquisition,
    _snowplow_list,
    acquisition,
    load_categories,
    load_referers,
)

SITE = "shop.example.com"

# (referrer host, utm_source, utm_medium, utm_campaign) → (source, channel); GA4's rules in GA4's order.
RULES = [
    # 1 Direct: no referrer, no UTM.
    (("", "", "", ""), ("", "Direct")),
    # 2 Cross-network: the campaign name says so, whatever else.
    (("", "google", "cpc", "pmax_cross-network_q3"), ("Google", "Cross-network")),
    # 3 Paid Shopping: a shopping site or a shop campaign, with a paid medium.
    (("", "amazon", "cpc", ""), ("Amazon", "Paid Shopping")),
    (("", "partner", "paid", "spring-shop"), ("partner", "Paid Shopping")),
    (("", "partner", "ppc", "eshopping"), ("partner", "Paid Shopping")),
    # 4 Paid Search.
    (("", "google", "cpc", ""), ("Google", "Paid Search")),
    (("", "bing", "ppc", ""), ("Bing", "Paid Search")),
    (("", "google", "cpm", ""), ("Google", "Paid Search")),  # before Display, as GA4 orders them
    # 5 Paid Social.
    (("", "facebook", "paid_social", ""), ("Facebook", "Paid Social")),
    (("", "ig", "retargeting", ""), ("Instagram", "Paid Social")),
    # 6 Paid Video.
    (("", "youtube", "cpv", ""), ("YouTube", "Paid Video")),
    # 7 Display.
    (("", "adserver", "display", ""), ("adserver", "Display")),
    (("", "adserver", "banner", ""), ("adserver", "Display")),
    (("", "adserver", "cpm", ""), ("adserver", "Display")),
    (("", "adserver", "interstitial", ""), ("adserver", "Display")),
    # 8 Paid Other.
    (("", "partner", "cpc", ""), ("partner", "Paid Other")),
    (("", "partner", "paid-listing", "workshop"), ("partner", "Paid Other")),  # "workshop" is no shop campaign
    # 9 Organic Shopping.
    (("www.ebay.com", "", "", ""), ("ebay.com", "Organic Shopping")),
    (("", "partner", "", "shop-opening"), ("partner", "Organic Shopping")),
    # 10 Organic Social.
    (("www.facebook.com", "", "", ""), ("Facebook", "Organic Social")),
    (("", "partner", "social-media", ""), ("partner", "Organic Social")),
    # 11 Organic Video.
    (("www.youtube.com", "", "", ""), ("YouTube", "Organic Video")),
    (("", "partner", "video-embed", ""), ("partner", "Organic Video")),
    # 12 Organic Search.
    (("www.google.com", "", "", ""), ("Google", "Organic Search")),
    (("", "partner", "organic", ""), ("partner", "Organic Search")),
    # 13 Referral.
    (("blog.example.org", "", "", ""), ("blog.example.org", "Referral")),
    (("", "partner", "link", ""), ("partner", "Referral")),
    (("", "partner", "app", ""), ("partner", "Referral")),
    # 14 Email.
    (("", "crm", "email", ""), ("crm", "Email")),
    (("", "e-mail", "", ""), ("e-mail", "Email")),
    (("", "newsletter", "", ""), ("newsletter", "Email")),  # ours: GA4 would say Unassigned
    (("mail.google.com", "", "", ""), ("Gmail", "Email")),  # ours: GA4 would say Referral
    # 15 Affiliates.
    (("", "partner", "affiliate", ""), ("partner", "Affiliates")),
    # 16 Audio.
    (("", "spotify-ads", "audio", ""), ("spotify-ads", "Audio")),
    # 17 SMS.
    (("", "twilio", "sms", ""), ("twilio", "SMS")),
    (("", "sms", "", ""), ("sms", "SMS")),
    # 18 Mobile Push Notifications.
    (("", "app", "web-push", ""), ("app", "Mobile Push Notifications")),
    (("", "app", "mobile", ""), ("app", "Mobile Push Notifications")),
    (("", "app", "notification", ""), ("app", "Mobile Push Notifications")),
    (("", "firebase", "", ""), ("firebase", "Mobile Push Notifications")),
    # 19 Unassigned.
    (("", "partner", "unknown-medium", ""), ("partner", "Unassigned")),
    (("", "", "", "spring-sale"), ("", "Unassigned")),
]

SOURCES = [
    # Hosts match by suffix: country domains, mobile and link-shim subdomains, app ids.
    (("www.google.de", "", "", ""), ("Google", "Organic Search")),
    (("google.co.uk", "", "", ""), ("Google", "Organic Search")),
    (("com.google.android.googlequicksearchbox", "", "", ""), ("Google", "Organic Search")),
    (("duckduckgo.com", "", "", ""), ("DuckDuckGo", "Organic Search")),
    (("www.bing.com", "", "", ""), ("Bing", "Organic Search")),
    (("m.facebook.com", "", "", ""), ("Facebook", "Organic Social")),
    (("l.facebook.com", "", "", ""), ("Facebook", "Organic Social")),
    (("l.instagram.com", "", "", ""), ("Instagram", "Organic Social")),
    (("lnkd.in", "", "", ""), ("LinkedIn", "Organic Social")),
    (("www.linkedin.com", "", "", ""), ("LinkedIn", "Organic Social")),
    (("t.co", "", "", ""), ("X", "Organic Social")),
    (("x.com", "", "", ""), ("X", "Organic Social")),
    (("old.reddit.com", "", "", ""), ("Reddit", "Organic Social")),
    (("m.youtube.com", "", "", ""), ("YouTube", "Organic Video")),
    (("com.google.android.gm", "", "", ""), ("Gmail", "Email")),
    (("googleadservices.com", "", "", ""), ("Google", "Paid Search")),  # an ad click's redirect
    (("support.google.com", "", "", ""), ("Google", "Referral")),  # Google's, but no search engine
    (("www.blog.example.org.", "", "", ""), ("blog.example.org", "Referral")),
    # utm_source wins over the referrer, names are case-insensitive and known shorthands are spelled out.
    (("www.google.com", "facebook", "", ""), ("Facebook", "Organic Social")),
    (("", "Facebook", "", ""), ("Facebook", "Organic Social")),
    (("", "GOOGLE", "", ""), ("Google", "Organic Search")),
    (("", " fb ", "", ""), ("Facebook", "Organic Social")),
    (("", "facebook.com", "", ""), ("Facebook", "Organic Social")),
    (("", "mailchimp", "email", ""), ("Mailchimp", "Email")),
    (("", "MyPartner", "", ""), ("MyPartner", "Unassigned")),
    (("", "MyPartner", "CPC", ""), ("MyPartner", "Paid Other")),
    # utm_medium without a source keeps the referrer's name.
    (("blog.example.org", "", "email", ""), ("blog.example.org", "Email")),
]


@pytest.mark.parametrize(("given_", "expected"), RULES + SOURCES)
def test_acquisition_follows_ga4_rules(given_: tuple[str, str, str, str], expected: tuple[str, str]) -> None:
    assert acquisition(*given_, SITE) == Acquisition(*expected)


@pytest.mark.parametrize("referrer", [SITE, "www." + SITE])
def test_own_site_referrer_is_direct(referrer: str) -> None:
    assert acquisition(referrer, "", "", "", SITE) == Acquisition("", "Direct")
    assert acquisition("shop.example.com", "", "", "", "www.shop.example.com") == Acquisition("", "Direct")


def test_own_site_referrer_with_utm_follows_the_utm() -> None:
    assert acquisition(SITE, "newsletter", "email", "", SITE) == Acquisition("newsletter", "Email")


def test_every_ga4_rule_is_tested_in_order() -> None:
    seen = list(dict.fromkeys(channel for _, (_, channel) in RULES))
    assert seen == list(CHANNELS)


def test_snowplow_list_is_read_from_the_installed_package() -> None:
    hosts, names = load_referers(_snowplow_list())
    assert hosts["google.com"] == ("Google", "search")
    assert hosts["com.google.android.gm"] == ("Gmail", "email")
    assert names["fb"] == ("Facebook", "social")
    assert len(hosts) > 1000


def test_ga4_category_list_is_loaded() -> None:
    assert load_categories(GA4_CATEGORIES) == CATEGORIES
    assert len(CATEGORIES) == 819
    sites = ("google", "facebook", "youtube", "amazon")
    assert [CATEGORIES[s] for s in sites] == ["search", "social", "video", "shopping"]


@given(st.text(), st.text(), st.text(), st.text(), st.text())
def test_acquisition_never_raises_and_names_a_channel(
    referrer: str, source: str, medium: str, campaign: str, page: str
) -> None:
    came = acquisition(referrer, source, medium, campaign, page)
    assert came.channel in CHANNELS
    assert isinstance(came.source, str)


@given(st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True))
def test_referrer_on_the_page_host_is_direct(host: str) -> None:
    assert acquisition(host, "", "", "", host) == Acquisition("", "Direct")
