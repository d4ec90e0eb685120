"""Pixel input: bodies, GIF query strings and the per-field checks of each event; and that the
event's JSON Schema in /openapi.json admits exactly what check_event accepts."""

import re
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from app.http.errors import InvalidJson, UnsupportedContentType, ValidationFailed
from app.pixel.validation import (
    EVENT_NAME,
    MAX_BATCH,
    PROPERTIES_MAX_BYTES,
    PROPERTIES_MAX_DEPTH,
    PROPERTIES_MAX_KEYS,
    URL,
    URL_MAX,
    TrackBody,
    TrackedInput,
    body_source,
    check_event,
    check_properties,
    event_schema,
    gif_query,
    page_host,
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


def test_timestamps_are_rfc_3339_or_epoch_milliseconds_in_2000_to_2099():
    assert check_event({**GOOD, "timestamp": "2024-05-01T10:00:00Z"}).client_ms == 1_714_557_600_000
    assert check_event({**GOOD, "timestamp": "2024-05-01T12:00:00+02:00"}).client_ms == 1_714_557_600_000
    assert check_event({**GOOD, "timestamp": 1_714_557_600_123}).client_ms == 1_714_557_600_123
    assert check_event({**GOOD, "timestamp": 1_714_557_600_123.0}).client_ms == 1_714_557_600_123
    for bad in (1_714_557_600, 1_714_557_600_123.5, True, "1999-12-31T23:00:00Z", "2100-01-01", "2024-05-01 10:00"):
        assert "timestamp" in errors_of({**GOOD, "timestamp": bad}), bad


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
    with pytest.raises(ValidationFailed) as too_many:  # maxItems in the schema: a 422 like any other limit
        parse_events(b"[" + b",".join([b"{}"] * 11) + b"]", 10)
    assert too_many.value.extra["errors"] == {"body": ["A batch holds at most 10 events; this one has 11."]}
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


# -- the schema /openapi.json shows is what check_event applies ---------------------------------------


def _pattern(validator, pattern, instance, schema):
    """`pattern` as ECMA-262 reads `^…$` (Python's `$` also matches before a final newline)."""
    if isinstance(instance, str) and not re.search(pattern.removesuffix("$") + r"\Z", instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Strict = validators.extend(Draft202012Validator, {"pattern": _pattern})
EVENT = Strict(event_schema())


def admitted(data) -> bool:
    return EVENT.is_valid(data)


def accepted(data) -> bool:
    return isinstance(check_event(data), TrackedInput)


SMALL_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)  # never past PROPERTIES_MAX_KEYS or PROPERTIES_MAX_BYTES, the limits only the description states
MOMENTS = st.datetimes(datetime(1970, 1, 1), datetime(9999, 12, 30), timezones=st.just(UTC))
OFFSETS = st.sampled_from(["Z", "+00:00", "+14:00", "-12:30", ""])
VALUES = {
    "event": st.from_regex(EVENT_NAME, fullmatch=True) | st.sampled_from(["", "has space", "x" * 65, "é"]),
    "url": st.from_regex(URL, fullmatch=True).filter(lambda u: len(u) <= URL_MAX)
    | st.sampled_from(
        [
            "https://a.example/ x",
            "https://user@a.example/",
            "https://[::1]/",
            "https://a.example:65536/",
            "https://a.example:65535/p",
            "HTTPS://A.EXAMPLE.",
            "https://.example/",
            "https://a.example\\evil/",
            "https://a.example/" + "p" * 2040,
            "//a.example/",
            "ftp://a.example/",
        ]
    )
    | st.text(max_size=20),
    "referrer": st.text(max_size=5) | st.sampled_from(["x" * 2048, "x" * 2049]),
    "user_agent": st.text(max_size=5) | st.sampled_from(["u" * 512, "u" * 513]),
    "properties": st.dictionaries(st.text(max_size=6), SMALL_JSON, max_size=4),
    "timestamp": st.integers(946_684_799_000, 4_102_444_800_001)
    | st.sampled_from([946_684_800_000, 4_102_444_799_999, 4_102_444_800_000, 1.7e12, 1.5e12 + 0.5])
    | st.builds(lambda m, o: m.isoformat().replace("+00:00", "") + o, MOMENTS, OFFSETS)
    | st.builds(lambda m: m.date().isoformat(), MOMENTS),
    "sample_key": st.floats(-1, 2) | st.sampled_from([0, 1, 0.0, 0.999999, True]),
}
OPTIONAL = ("referrer", "user_agent", "properties", "timestamp", "sample_key")
EVENTS = st.fixed_dictionaries(
    {"event": VALUES["event"], "url": VALUES["url"]}, optional={name: VALUES[name] for name in OPTIONAL}
) | st.fixed_dictionaries(
    {}, optional={name: strategy | SMALL_JSON for name, strategy in VALUES.items()} | {"extra": SMALL_JSON}
)


@settings(max_examples=1500)
@given(EVENTS)
def test_the_event_schema_admits_exactly_the_events_check_event_accepts(data):
    assert admitted(data) == accepted(data), (data, check_event(data))


@given(st.from_regex(URL, fullmatch=True))
def test_every_url_the_pattern_admits_has_the_host_its_site_is_found_by(url):
    host = page_host({"url": url})
    if len(url) <= URL_MAX:
        assert host and host == host.lower() and not host.endswith(".") and "\x00" not in host


@pytest.mark.parametrize(
    "properties",
    [
        {f"k{i}": {"a": 1} for i in range(30)},  # 60 keys over two levels, each object within maxProperties
        {"a": "x" * PROPERTIES_MAX_BYTES},
    ],
)
def test_the_limits_only_the_description_states_are_still_applied(properties):
    assert admitted({**GOOD, "properties": properties}) and not accepted({**GOOD, "properties": properties})


def test_the_body_is_one_event_or_a_batch_of_at_most_the_configured_maximum():
    body = TrackBody().documented()
    single, batch = body["oneOf"]
    assert single == event_schema() and batch["items"] == event_schema()
    assert (batch["minItems"], batch["maxItems"]) == (1, MAX_BATCH) == (1, 100)
    assert "SLUICE_PIXEL_MAX_BATCH" in body["description"]


def test_the_gif_declares_url_required_and_properties_as_json():
    params = {p["name"]: p for p in gif_query().parameters()}
    assert [name for name, p in params.items() if p["required"]] == ["url"]
    assert params["properties"]["content"]["application/json"]["schema"]["type"] == "object"
    assert params["timestamp"]["schema"]["anyOf"][0]["type"] == "integer"


@pytest.mark.parametrize(
    "query, field",
    [
        ({"properties": ["null"]}, "properties"),
        ({"properties": ["[1]"]}, "properties"),
        ({"sample_key": ["nan"]}, "sample_key"),
        ({"sample_key": ["0_5"]}, "sample_key"),
        ({"sample_key": [" 0.5"]}, "sample_key"),
        ({"timestamp": ["-5"]}, "timestamp"),
        ({"timestamp": ["1999-12-31"]}, "timestamp"),
        ({"event": [""]}, "event"),
    ],
)
def test_gif_parameters_are_read_as_their_schema_says(query, field):
    assert field in errors_of(query_event({"url": ["https://e.com/"], **query}, None))


def test_gif_parameters_in_their_schema_are_accepted():
    query = {
        "url": ["https://e.com/"],
        "sample_key": ["1e-05"],
        "timestamp": ["2024-05-01"],
        "properties": ['{"a":[1]}'],
    }
    item = check_event(query_event(query, None))
    assert isinstance(item, TrackedInput) and item.sample_key == 1e-05 and item.properties == '{"a":[1]}'
    assert item.client_ms == int(datetime(2024, 5, 1, tzinfo=UTC).timestamp() * 1000)
