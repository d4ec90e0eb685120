"""Enrichment: clamped times, anonymised addresses, daily visitor ids, URL and referrer splits."""

import ipaddress

import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.pixel.enrichment import (
    MAX_AGE_MS,
    Arrival,
    Visitor,
    clamp_time,
    enrich,
    ip_prefix,
    needs_alias,
    previous_period,
    salt_period,
    sample_point,
    url_host,
    utm_params,
    visitor_id,
)
from app.pixel.geo import Location
from app.pixel.validation import check_event
from ingest.events import ch_time, session_prefix

NOW = 1_717_000_000_000
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"


VISITOR: Visitor = (b"v" * 32, None, 1800)


def arrival(**changes) -> Arrival:
    values = {"received_ms": NOW, "address": "203.0.113.77", "user_agent": UA, "source": "json", "salt": b"s" * 32}
    return Arrival(**{**values, **changes})


def test_a_client_time_in_the_future_becomes_the_server_time():
    assert clamp_time(NOW + 60_000, NOW) == NOW


def test_a_client_time_older_than_a_day_is_clamped_to_a_day_ago():
    assert clamp_time(NOW - 3 * MAX_AGE_MS, NOW) == NOW - MAX_AGE_MS


def test_a_plausible_client_time_is_kept_and_a_missing_one_is_the_server_time():
    assert clamp_time(NOW - 5_000, NOW) == NOW - 5_000
    assert clamp_time(None, NOW) == NOW


@given(st.integers(min_value=0, max_value=2**42), st.integers(min_value=MAX_AGE_MS, max_value=2**42))
def test_clamped_time_is_never_after_receipt_nor_more_than_a_day_before(client, received):
    assert received - MAX_AGE_MS <= clamp_time(client, received) <= received


def test_ipv4_keeps_its_slash_24_and_ipv6_its_slash_48():
    assert ip_prefix("203.0.113.77") == "203.0.113.0"
    assert ip_prefix("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"
    assert ip_prefix("::ffff:198.51.100.9") == "198.51.100.0"
    assert ip_prefix("not an address") == ""


@given(st.ip_addresses())
def test_the_prefix_holds_the_address_and_is_never_the_address_itself(address):
    prefix = ipaddress.ip_address(ip_prefix(str(address)))
    bits = 24 if prefix.version == 4 else 48
    network = ipaddress.ip_network(f"{prefix}/{bits}")
    real = address.ipv4_mapped if address.version == 6 and address.ipv4_mapped else address
    assert real in network
    assert int(prefix) & ((1 << (network.max_prefixlen - bits)) - 1) == 0


def test_visitor_id_is_stable_within_a_day_and_changes_with_salt_site_address_or_agent():
    base = visitor_id(b"a" * 32, 1, "203.0.113.7", UA)
    assert base == visitor_id(b"a" * 32, 1, "203.0.113.7", UA)
    assert (
        len(
            {
                base,
                visitor_id(b"b" * 32, 1, "203.0.113.7", UA),
                visitor_id(b"a" * 32, 2, "203.0.113.7", UA),
                visitor_id(b"a" * 32, 1, "203.0.113.8", UA),
                visitor_id(b"a" * 32, 1, "203.0.113.7", "x"),
            }
        )
        == 5
    )


@given(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32))
def test_sample_point_lies_in_unit_interval(visitor):
    assert 0 <= sample_point(visitor) < 1


def test_utm_parameters_are_taken_from_the_page_query():
    assert utm_params("a=1&utm_source=news&utm_medium=email&utm_campaign=spring&utm_source=x") == {
        "utm_source": "news",
        "utm_medium": "email",
        "utm_campaign": "spring",
    }
    assert utm_params("q=utm") == {}


def test_url_host_is_lowercased_and_portless():
    assert url_host("https://WWW.Example.com:8443/a?b") == "www.example.com"
    assert url_host("ftp://example.com/") == ""
    assert url_host("http://[::1") == ""


def test_enrich_fills_every_derived_field_and_keeps_no_raw_address():
    item = check_event(
        {
            "event": "pageview",
            "url": "https://Shop.example.com/p/1?utm_source=ads&utm_term=shoes",
            "referrer": "https://www.google.com/search?q=x",
            "properties": {"title": "T"},
            "timestamp": NOW + 10_000,
        }
    )
    event, hint = enrich(item, 42, arrival(location=Location("DE", "DE-BY", "Munich")), VISITOR)
    assert event.workspace_id == 42 and event.event == "pageview"
    assert (event.host, event.path, event.referrer_host) == ("shop.example.com", "/p/1", "www.google.com")
    assert (event.utm_source, event.utm_term, event.utm_medium) == ("ads", "shoes", "")
    assert event.time == event.received_at == ch_time(NOW)
    assert event.client_time == ch_time(NOW + 10_000)
    assert (event.browser, event.browser_version, event.os, event.os_version, event.device, event.is_bot) == (
        "Chrome",
        "120.0",
        "Windows",
        "10",
        "desktop",
        False,
    )
    assert (event.country, event.region, event.city) == ("DE", "DE-BY", "Munich")
    assert (event.referrer_source, event.channel) == ("ads", "Unassigned")  # a source without a medium
    assert event.ip_prefix == "203.0.113.0"
    assert event.visitor_id == visitor_id(b"v" * 32, 42, "203.0.113.77", UA)
    assert event.event_id[14] == "7"  # UUIDv7
    assert orjson.loads(event.properties) == {"title": "T"}
    assert b"203.0.113.77" not in event.encode(hint)
    assert hint == session_prefix(event.visitor_id, "", 1800, NOW, NOW)
    assert orjson.loads(event.encode(hint)) == {
        **orjson.loads(event.encode()),
        "_session": f"{event.visitor_id}||1800|{NOW}|{NOW}",
    }


def test_near_a_salt_change_the_hint_names_the_visitor_under_the_previous_salt_too():
    item = check_event({"event": "pageview", "url": "https://example.com/"})
    event, hint = enrich(item, 7, arrival(), (b"v" * 32, b"p" * 32, 600))
    previous = visitor_id(b"p" * 32, 7, "203.0.113.77", UA)
    assert previous != event.visitor_id
    assert hint.startswith(b'{"_session":"%s|%s|600|' % (event.visitor_id.encode(), previous.encode()))


def test_salt_periods_of_each_rotation():
    moment = 1_764_633_600_000 + 5 * 3_600_000  # 2025-12-02 05:00 UTC, a Tuesday
    day, week, month = (salt_period(moment, rotation) for rotation in ("daily", "weekly", "monthly"))
    assert (day.name, day.start_ms, day.end_ms) == ("2025-12-02", 1_764_633_600_000, 1_764_720_000_000)
    assert day.salt_expires_at == 1_764_720_000 + 86_400  # a day after the day ends
    assert (week.name, week.start_ms) == ("2025-W49", 1_764_633_600_000 - 86_400_000)  # from Monday
    assert (month.name, month.start_ms, month.end_ms) == ("2025-12", 1_764_547_200_000, 1_767_225_600_000)
    assert week.end_ms - week.start_ms == 7 * 86_400_000
    assert previous_period(day, "daily").name == "2025-12-01"
    assert previous_period(week, "weekly").name == "2025-W48"
    assert previous_period(month, "monthly").name == "2025-11"
    # ISO weeks cross years: Wednesday 2025-12-31 is in week 1 of 2026
    assert salt_period(1_767_139_200_000 + 3_600_000, "weekly").name == "2026-W01"


@given(st.integers(0, 4_102_444_800_000), st.sampled_from(["daily", "weekly", "monthly"]))
def test_a_period_holds_its_moment_and_its_name_changes_only_at_its_end(moment, rotation):
    period = salt_period(moment, rotation)
    assert period.start_ms <= moment < period.end_ms
    assert salt_period(period.start_ms, rotation) == period == salt_period(period.end_ms - 1, rotation)
    assert salt_period(period.end_ms, rotation).start_ms == period.end_ms
    assert salt_period(period.start_ms - 1, rotation).name != period.name
    assert needs_alias(period.start_ms, period, 1800) and not needs_alias(period.start_ms + 3_600_001, period, 1800)


def test_enrich_prefers_the_user_agent_in_the_event_over_the_header():
    item = check_event({"event": "signup", "url": "https://example.com/", "user_agent": "curl/8.0"})
    event, _ = enrich(item, 1, arrival(), VISITOR)
    assert (event.user_agent, event.is_bot, event.path, event.client_time) == ("curl/8.0", True, "/", None)
