"""The declarations of app/http/shapes.py: what a field's JSON Schema admits is exactly what its
validator accepts, for any JSON value, so /openapi.json cannot promise what the service refuses
or hide what it accepts."""

import re

import pytest
from blacksheep import Request
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from app.http.errors import ValidationFailed
from app.http.shapes import (
    NOT_BLANK,
    Boolean,
    Choice,
    DateTime,
    Integer,
    List,
    Nullable,
    Number,
    Object,
    Query,
    Text,
)
from app.http.validation import MISSING


def _pattern(validator, pattern, instance, schema):
    """JSON Schema's `pattern` as ECMA-262 reads `^…$`: the end is the end of the string (Python's
    `$` also matches before a final newline, which schemathesis reads as `\\Z` too)."""
    if isinstance(instance, str) and not re.search(pattern.removesuffix("$") + r"\Z", instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Strict = validators.extend(Draft202012Validator, {"pattern": _pattern})


def admits(schema: dict, value) -> bool:
    return Strict(schema).is_valid(value)


def accepts(field, value) -> bool:
    errors: dict = {}
    return field.read(value, "f", errors) is not MISSING and not errors


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)
FIELDS = {
    "text": Text(max_len=8),
    "slug": Text(max_len=20, pattern="[a-z0-9]+(?:-[a-z0-9]+)*"),
    "choice": Choice(["free", "pro"]),
    "integer": Integer(0, 720),
    "number": Number(0, 1),
    "boolean": Boolean(),
    "date_time": DateTime(),
    "nullable": Nullable(Choice(["a", "b"])),
    "list": List(Text(max_len=3), max_items=3),
    "object": Object({"name": Text(max_len=5), "n": Integer(1, 9)}, required=["name"]),
}
TEXTS = st.text(max_size=12) | st.sampled_from(["", " ", "\t\n", "a\x00", "\u3000", "x\u2028", "\x1f", "a" * 9])
EDGES = st.sampled_from([-1, 0, 1, 9, 10, 720, 721, 0.5, 1.0, 1.5, 2.0, True, False, None, "2024-02-29", "2025-02-29"])


@pytest.mark.parametrize("name", FIELDS)
@settings(max_examples=300)
@given(value=JSON | TEXTS | EDGES)
def test_schema_admits_exactly_what_the_validator_accepts(name, value):
    field = FIELDS[name]
    assert admits(field.schema(), value) == accepts(field, value), (field.schema(), value)


@given(st.from_regex(f"^(?:{NOT_BLANK})$", fullmatch=True))
def test_text_the_pattern_draws_is_accepted(value):
    field = Text(max_len=10_000)
    assert accepts(field, value)


def test_object_collects_every_error_with_the_spec_messages():
    shape = Object({"name": Text(), "tier": Choice(["free", "pro"]), "n": Integer(1, 9)}, required=["name"])
    with pytest.raises(ValidationFailed) as failed:
        shape.parse({"tier": "gold", "n": 10, "bogus": 1})
    assert failed.value.extra["errors"] == {
        "bogus": ["Unknown field; allowed: name, tier, n."],
        "name": ["The name field is required."],
        "tier": ["The tier must be one of: free, pro."],
        "n": ["The n must be between 1 and 9."],
    }


def test_nested_objects_name_their_fields_with_a_dotted_path():
    shape = Object({"settings": Object({"locale": Text(max_len=5)})})
    with pytest.raises(ValidationFailed) as failed:
        shape.parse({"settings": {"locale": "toolong", "x": 1}})
    assert failed.value.extra["errors"] == {
        "settings.x": ["Unknown field; allowed: locale."],
        "settings.locale": ["The settings.locale may not be greater than 5 characters."],
    }


def test_query_reads_integers_from_text_and_requires_what_it_declares():
    query = Query({"url": Text(), "limit": Integer(1, 100)}, required=["url"])
    assert query.parse_values({"url": ["https://a.example/"], "limit": ["7"]}) == {
        "url": "https://a.example/",
        "limit": 7,
    }
    with pytest.raises(ValidationFailed) as failed:
        query.parse_values({"limit": ["07x"], "other": ["ignored"]})
    assert failed.value.extra["errors"] == {
        "url": ["The url parameter is required."],
        "limit": ["The limit must be an integer between 1 and 100."],
    }
    with pytest.raises(ValidationFailed):
        query.parse_values({"url": ["a", "b"]})
    params = {p["name"]: p for p in query.parameters()}
    assert params["url"]["required"] and params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}


def test_query_of_a_request_counts_a_blank_parameter_as_given():
    """`?limit=` is a limit given as nothing: 422, as the schema (an integer) says, not a limit left out."""
    query = Query({"limit": Integer(1, 100)})
    assert query.parse(Request("GET", b"/x?limit=7", None)) == {"limit": 7}
    with pytest.raises(ValidationFailed) as failed:
        query.parse(Request("GET", b"/x?limit=", None))
    assert list(failed.value.extra["errors"]) == ["limit"]
