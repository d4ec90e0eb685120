"""The one parser of request input (app/http/validation.py): strict ASCII integers and ids, ISO 8601
times in UTC within the years every layer handles, text Postgres can store, URLs; each refuses
with ValueError and nothing else, whatever it is given."""

import functools
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.http.errors import ValidationFailed
from app.http.validation import (
    ID_MAX,
    YEAR_MAX,
    YEAR_MIN,
    Checker,
    json_size,
    parse_datetime,
    parse_id,
    parse_int,
    split_url,
    storable,
    unstorable_key,
)

SLUG = re.compile(r"[a-z]+")


@pytest.mark.parametrize("text, expected", [("1", 1), ("100", 100), ("007", 7), ("0", 0)])
def test_ascii_digits_in_range_are_integers(text, expected):
    assert parse_int(text, 0, 100) == expected


@pytest.mark.parametrize(
    "text",
    [
        "\u00b2",
        "1\u00b2",
        "\uff11",
        "\u0661",
        "\U0001d7cf",
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1_000",
        "1.0",
        "1e2",
        "0x1",
        "101",
        "1" + "0" * 4400,
        "9" * 5000,
        "0" * 30 + "1",
    ],
)
def test_anything_else_is_refused_with_value_error(text):
    with pytest.raises(ValueError):
        parse_int(text, 0, 100)


@pytest.mark.parametrize("value", [None, 1, 1.0, b"1", ["1"]])
def test_a_non_string_is_refused_with_value_error(value):
    with pytest.raises(ValueError):
        parse_int(value, 0, 100)


def test_ids_span_postgres_bigint():
    assert parse_id(str(ID_MAX)) == 2**63 - 1
    for text in ("0", str(ID_MAX + 1), "\u00b2"):
        with pytest.raises(ValueError):
            parse_id(text)


@given(st.text())
def test_parse_int_of_any_text_is_in_range_or_a_value_error(text):
    try:
        value = parse_int(text, 1, 1000)
    except ValueError:
        return
    assert 1 <= value <= 1000 and re.fullmatch(r"[0-9]+", text)


@given(st.integers(min_value=0, max_value=ID_MAX))
def test_every_integer_in_range_reads_back(number):
    assert parse_int(str(number), 0, ID_MAX) == number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-01-15", datetime(2026, 1, 15, tzinfo=UTC)),
        ("2026-01-15T10:30:00", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
        ("2026-01-15T10:30:00+02:00", datetime(2026, 1, 15, 8, 30, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_dates_are_read_in_utc(text, expected):
    value = parse_datetime(text)
    assert value == expected and value.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC: OverflowError when converted
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:00:00+00:01",
        "2026-02-30",
        "yesterday",
        "",
        "2026-01-01T00:00:00" + "0" * 40,
    ],
)
def test_dates_outside_the_years_or_not_iso_are_a_value_error(text):
    with pytest.raises(ValueError):
        parse_datetime(text)


@given(st.text(max_size=45))
def test_parse_datetime_of_any_text_is_utc_in_range_or_a_value_error(text):
    try:
        value = parse_datetime(text)
    except ValueError:
        return
    assert value.tzinfo is UTC and YEAR_MIN <= value.year <= YEAR_MAX


@given(st.datetimes(timezones=st.timezones()))
def test_any_aware_date_time_reads_back_as_the_same_instant_or_is_refused(moment):
    epoch = datetime(YEAR_MIN, 1, 1, tzinfo=UTC)
    last = datetime(YEAR_MAX, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    inside = timedelta(0) <= moment - epoch <= last - epoch  # aware subtraction: exact, never overflows
    try:
        value = parse_datetime(moment.isoformat())
    except ValueError:
        assert not inside
        return
    # Naive arithmetic: == between zones is never true for a time in a repeated (DST) hour.
    assert inside and value == (moment.replace(tzinfo=None) - moment.utcoffset()).replace(tzinfo=UTC)


@pytest.mark.parametrize("text, ok", [("plain", True), ("é😀\u202e", True), ("a\x00b", False), ("\ud800", False)])
def test_storable_text_has_no_nul_and_no_lone_surrogate(text, ok):
    assert storable(text) is ok


def test_unstorable_key_finds_nul_at_any_depth_in_keys_and_values():
    deep = functools.reduce(lambda inner, _: [inner], range(5000), ["a\x00"])
    assert unstorable_key({"fine": [1, {"x": "y"}], "bad": deep}) == "bad"
    assert unstorable_key({"outer": {"k\x00": 1}}) == "outer"
    assert unstorable_key({"k\x00": None}) == "k\x00"
    assert unstorable_key({"ok": {"nested": ["text", 1.5, None, True]}}) is None


def test_json_size_is_none_past_what_orjson_encodes():
    assert json_size({"a": [1, 2]}) == len(b'{"a":[1,2]}')
    assert json_size(functools.reduce(lambda inner, _: [inner], range(300), [])) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://[::1/x",
        "https://[zzz]/x",
        "https://a:99999/",
        "https://a:x/",
        "ftp://example.com/",
        "https:///x",
        "https://exa mple.com/",
        "example.com",
    ],
)
def test_split_url_refuses_what_is_not_an_absolute_url_with_value_error(url):
    with pytest.raises(ValueError):
        split_url(url, ("http", "https"))


def test_split_url_gives_the_parts():
    parts = split_url("https://Example.com:8443/a?b=c", ("https",))
    assert (parts.hostname, parts.port, parts.path) == ("example.com", 8443, "/a")


@given(st.text())
def test_split_url_of_any_text_is_parts_or_a_value_error(text):
    try:
        parts = split_url("https://" + text, ("https",))
    except ValueError:
        return
    assert parts.hostname


def test_checker_refuses_nul_in_strings_and_string_lists_naming_the_field():
    checker = Checker({"name": "a\x00b", "tags": ["ok", "b\x00"], "slug": "fine"})
    checker.string("name")
    checker.string_list("tags")
    assert checker.string("slug", pattern=SLUG) == "fine"
    with pytest.raises(ValidationFailed) as refused:
        checker.done()
    assert set(refused.value.extra["errors"]) == {"name", "tags"}


def test_checker_url_names_the_field_for_a_malformed_url():
    checker = Checker({"url": "https://[::1/x", "home": "https://example.com/"})
    assert checker.url("url", ("https",))[1] is None
    url, parts = checker.url("home", ("https",))
    assert url == "https://example.com/" and parts.hostname == "example.com"
    assert checker.errors == {"url": ["The url must be an absolute https URL."]}


def test_checker_timestamp_refuses_dates_that_overflow_in_utc():
    checker = Checker({"at": "9999-12-31T23:59:59-14:00"})
    checker.timestamp("at")
    assert list(checker.errors) == ["at"]
