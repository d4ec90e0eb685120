"""Pixel input: bodies, GIF query strings and the per-field checks of each event."""

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.http.errors import InvalidJson, PayloadTooLarge, UnsupportedContentType, ValidationFailed
from app.pixel.validation import (
    PROPERTIES_MAX_BYTES,
    PROPERTIES_MAX_DEPTH,
    PROPERTIES_MAX_KEYS,
    TrackedInput,
    body_source,
    check_event,
    check_properties,
    parse_events,
    query_event,
)

GOOD = {"event": "pageview", "url": "https://example.com/a"}


def errors_of(data) -> dict:
    result = check_event(data)
    assert isinstance(result, dict), result
    return result


def test_a_minimal_event_is_valid_with_defaults():
    item = check_event(GOOD)
    assert isinstance(item, TrackedInput)
    assert (item.host, item.referrer, item.user_agent, item.properties, item.client_ms) == (
        "example.com",
        "",
        "",
        "{}",
        None,
    )


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "emoji🙂", 5, None])
def test_event_names_outside_the_pattern_are_refused(name):
    assert "event" in errors_of({**GOOD, "event": name})


@pytest.mark.parametrize(
    "url",
    [
        "/relative",
        "ftp://example.com/",
        "https://",
        "javascript:alert(1)",
        "https://example.com/" + "a" * 2048,
        7,
        "http://[::1",
    ],
)
def test_urls_must_be_absolute_http_and_at_most_2048_characters(url):
    assert "url" in errors_of({**GOOD, "url": url})


def test_every_bad_field_is_reported_at_once():
    errors = errors_of(
        {
            "event": "",
            "url": "x",
            "referrer": "r" * 2049,
            "user_agent": "u" * 513,
            "properties": [],
            "timestamp": "yesterday",
            "sample_key": 1.5,
            "extra": 1,
        }
    )
    assert set(errors) == {"event", "url", "referrer", "user_agent", "properties", "timestamp", "sample_key", "extra"}


def test_timestamps_are_iso_8601_or_epoch_milliseconds_in_a_sane_range():
    assert check_event({**GOOD, "timestamp": "2024-05-01T10:00:00Z"}).client_ms == 1_714_557_600_000
    assert check_event({**GOOD, "timestamp": 1_714_557_600_123}).client_ms == 1_714_557_600_123
    assert "timestamp" in errors_of({**GOOD, "timestamp": 1_714_557_600})  # seconds, not ms: year 1970
    assert "timestamp" in errors_of({**GOOD, "timestamp": True})


def test_properties_depth_keys_and_size_are_bounded():
    assert check_properties({"a": {"b": {"c": 1}}}, {}) == '{"a":{"b":{"c":1}}}'
    for value in (
        {"a": {"b": {"c": {}}}},
        {f"k{i}": i for i in range(PROPERTIES_MAX_KEYS + 1)},
        {"a": "x" * PROPERTIES_MAX_BYTES},
        {"a": [[[1]]]},
    ):
        errors = {}
        assert check_properties(value, errors) == "{}"
        assert "properties" in errors


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _keys(value) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_keys(v) for v in value)
    return 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=60,
)


@given(st.dictionaries(st.text(max_size=8), JSON, max_size=8))
def test_properties_are_accepted_exactly_when_within_every_bound(value):
    errors = {}
    text = check_properties(value, errors)
    within = (
        _depth(value) <= PROPERTIES_MAX_DEPTH
        and _keys(value) <= PROPERTIES_MAX_KEYS
        and len(orjson.dumps(value)) <= PROPERTIES_MAX_BYTES
    )
    assert (not errors) == within
    if within:
        assert orjson.loads(text) == value


def test_bodies_hold_one_event_or_a_bounded_non_empty_array():
    assert parse_events(b'{"event": "a"}', 10) == ([{"event": "a"}], False)
    assert parse_events(b'[{"event": "a"}, 1]', 10) == ([{"event": "a"}, 1], True)
    with pytest.raises(PayloadTooLarge):
        parse_events(b"[" + b",".join([b"{}"] * 11) + b"]", 10)
    for body in (b"", b"[]", b'"text"'):
        with pytest.raises(ValidationFailed):
            parse_events(body, 10)
    with pytest.raises(InvalidJson):
        parse_events(b"{nope", 10)


def test_text_plain_is_a_beacon_json_is_json_and_other_types_are_refused():
    assert body_source(b"text/plain;charset=UTF-8") == "beacon"
    assert body_source(b"application/json") == "json"
    assert body_source(None) == "json"
    with pytest.raises(UnsupportedContentType):
        body_source(b"application/x-www-form-urlencoded")


def test_gif_query_defaults_to_a_pageview_of_the_referer_and_ignores_cache_busters():
    data = query_event(
        {"_": ["123"], "properties": ['{"a": 1}'], "timestamp": ["1714557600123"]}, "https://example.com/page"
    )
    assert data == {
        "event": "pageview",
        "url": "https://example.com/page",
        "properties": {"a": 1},
        "timestamp": 1714557600123,
    }
    assert "properties" in errors_of(query_event({"url": ["https://e.com/"], "properties": ["{bad"]}, None))
