"""The one parser of request input (app/http/validation.py): strict ASCII integers and ids, ISO 8601
times in UTC within the years every layer handles, text Postgres can store, URLs; each refuses
with ValueError and nothing else, whatever it is given."""

import functools
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.http.validation import (
    DATE_TIME,
    ID_MAX,
    YEAR_MAX,
    YEAR_MIN,
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
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2026-02-30",
        "2025-02-29",  # not a leap year
        "2100-02-29",  # a century that is not one
        "2026-01-15T10:30",  # seconds are required
        "2026-01-15 10:30:00",  # RFC 3339's T, not a space
        "2026-01-15T10:30:00+05:30:15",  # offsets in seconds are not RFC 3339
        "2026-01-15T10:30:00.1234567Z",  # at most microseconds
        "2026-W03-4",
        "20260115",
        "2026-01-15\n",
        "yesterday",
        "",
        "2026-01-01T00:00:00" + "0" * 40,
    ],
)
def test_dates_outside_the_years_or_not_rfc3339_are_a_value_error(text):
    with pytest.raises(ValueError):
        parse_datetime(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1970-01-01T00:00:00+00:01", datetime(1970, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59-14:00", datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)),
        ("2000-02-29", datetime(2000, 2, 29, tzinfo=UTC)),
        ("1972-02-29T12:00:00.5Z", datetime(1972, 2, 29, 12, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_an_offset_past_the_ends_of_the_range_clamps_to_them(text, expected):
    """The grammar (and the schema in /openapi.json) admits every calendar date of 1970-9999 with
    any offset, so the service accepts them all: past the ends, by at most 14 hours, it clamps."""
    assert parse_datetime(text) == expected


@given(st.text(max_size=45))
def test_parse_datetime_of_any_text_is_utc_in_range_or_a_value_error(text):
    try:
        value = parse_datetime(text)
    except ValueError:
        return
    assert value.tzinfo is UTC and YEAR_MIN <= value.year <= YEAR_MAX


@given(st.from_regex(f"^(?:{DATE_TIME})$", fullmatch=True))
def test_every_value_the_documented_pattern_admits_is_accepted(text):
    """What /openapi.json declares for dates (its pattern) is exactly what the service reads."""
    value = parse_datetime(text)
    assert value.tzinfo is UTC and YEAR_MIN <= value.year <= YEAR_MAX


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()))
def test_any_aware_date_time_in_whole_minutes_of_offset_reads_back_as_the_same_instant(moment):
    offset = moment.utcoffset()
    text = moment.isoformat()
    if offset is None or offset.seconds % 60:  # RFC 3339 offsets are whole minutes
        with pytest.raises(ValueError):
            parse_datetime(text)
        return
    # Naive arithmetic: == between zones is never true for a time in a repeated (DST) hour.
    assert parse_datetime(text) == (moment.replace(tzinfo=None) - offset).replace(tzinfo=UTC)


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
