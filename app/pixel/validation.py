"""Pixel stage "parse and validate": request bodies and GIF query strings → TrackedInput, or
the per-field errors of each event (the batch form answers each event on its own).

Each limit of an event is declared once, below: the checks apply it and `event_schema()` shows it
in /openapi.json, so the two cannot disagree. The checks are written out by hand rather than
through app/http/shapes.py: this is the hot path (one event costs a few µs here), and an empty
referrer (the common case) is valid here where shapes' Text refuses blank strings.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import orjson

from app.http.errors import InvalidJson, UnsupportedContentType, ValidationFailed
from app.http.shapes import Errors, Field, Query, anchored
from app.http.validation import DATE_TIME, parse_datetime, parse_int
from storage.config import ApiConfig

# -- the event's shape ---------------------------------------------------------------------------
EVENT_NAME = "[A-Za-z0-9_.:-]{1,64}"
URL_MAX = 2048  # what browsers and CDNs reliably pass through
# An absolute http(s) URL as a page's location.href reads: a host name of dot-separated labels
# (a trailing dot allowed), an optional port, then path, query and fragment without spaces or
# control characters. No user info and no IP-literal host: no site can be registered for either.
PORT = "[0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]"
URL = f"[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*\\.?(?::(?:{PORT}))?(?:[/?#][^\\x00-\\x20\\x7f]*)?"
REFERRER_MAX = 2048
USER_AGENT_MAX = 512  # real browsers stay under 300 characters
PROPERTIES_MAX_BYTES = 8192
PROPERTIES_MAX_DEPTH = 3  # the properties object itself is depth 1
PROPERTIES_MAX_KEYS = 50  # counted over every nested object
# ClickHouse's DateTime64 holds 1900-2299; a client clock outside this range is not a clock.
TIME_MIN_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
TIME_MAX_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)  # excluded
# The same years as text: an RFC 3339 date-time (or date) whose written year is 2000-2099.
TIMESTAMP_TEXT = f"(?=20[0-9][0-9]-){DATE_TIME}"
TIMESTAMP_TEXT_MAX = 40
FIELDS = ("event", "url", "referrer", "user_agent", "properties", "timestamp", "sample_key")
REQUIRED = ("event", "url")
# SLUICE_PIXEL_MAX_BATCH as shipped: the document states the default (a deployment that changes
# it refuses or admits accordingly, and says so in the 422).
MAX_BATCH = ApiConfig.pixel_max_batch

_EVENT_NAME = re.compile(EVENT_NAME)
_URL = re.compile(URL)
_TIMESTAMP_TEXT = re.compile(TIMESTAMP_TEXT)
# What JSON calls a number: the GIF's sample_key is read by this, not by float()'s wider grammar.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
SCALARS = (str, int, float, bool, type(None))
JSON_TYPES = (b"application/json", b"text/plain", b"")  # text/plain: what sendBeacon sends


def properties_schema() -> dict[str, Any]:
    """Objects and arrays nested at most PROPERTIES_MAX_DEPTH deep; the total key count and the
    size, which JSON Schema cannot count, are in the description."""
    scalar: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}
    value = scalar
    for _ in range(PROPERTIES_MAX_DEPTH - 1):
        value = {
            "anyOf": [
                scalar,
                {"type": "object", "maxProperties": PROPERTIES_MAX_KEYS, "additionalProperties": value},
                {"type": "array", "items": value},
            ]
        }
    return {
        "type": ["object", "null"],
        "maxProperties": PROPERTIES_MAX_KEYS,
        "additionalProperties": value,
        "description": f"At most {PROPERTIES_MAX_DEPTH} levels deep (this object is the first), "
        f"{PROPERTIES_MAX_KEYS} keys counted over every nested object, and {PROPERTIES_MAX_BYTES} bytes as JSON.",
    }


def timestamp_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "integer", "minimum": TIME_MIN_MS, "maximum": TIME_MAX_MS - 1},
            {"type": "string", "maxLength": TIMESTAMP_TEXT_MAX, "pattern": anchored(TIMESTAMP_TEXT)},
            {"type": "null"},
        ],
        "description": "When the event happened by the client's clock: epoch milliseconds or an RFC 3339 "
        "date-time, in the years 2000-2099. The stored time is never later than its arrival nor a day earlier.",
    }


def event_schema() -> dict[str, Any]:
    """One event's JSON Schema, built from the constants check_event applies."""
    return {
        "type": "object",
        "required": list(REQUIRED),
        "additionalProperties": False,
        "properties": {
            "event": {"type": "string", "pattern": anchored(EVENT_NAME), "examples": ["pageview"]},
            "url": {
                "type": "string",
                "maxLength": URL_MAX,
                "pattern": anchored(URL),
                "description": "The page: an absolute http(s) URL; its host names the site (registered with "
                "POST /api/v1/pixel/domains, else 403 unknown_domain).",
            },
            "referrer": {"type": ["string", "null"], "maxLength": REFERRER_MAX},
            "user_agent": {
                "type": ["string", "null"],
                "maxLength": USER_AGENT_MAX,
                "description": "Empty or absent: the request's User-Agent.",
            },
            "properties": properties_schema(),
            "timestamp": timestamp_schema(),
            "sample_key": {
                "type": ["number", "null"],
                "minimum": 0,
                "exclusiveMaximum": 1,
                "description": "The client's sampling draw; the server keeps the event when it is below the "
                "site's sample_rate.",
            },
        },
    }


class TrackBody(Field):
    """POST /pixel/track's body as the document shows it: one event, or a batch of 1 to MAX_BATCH.
    parse_events and check_event validate it (by hand, for speed), so `read` is never called."""

    description = (
        f"One event, or an array of 1 to {MAX_BATCH} (SLUICE_PIXEL_MAX_BATCH) events judged one by one: "
        "207 when some are rejected, each result saying why. The events' properties are limited as described."
    )

    def schema(self) -> dict[str, Any]:
        event = event_schema()
        batch = {"type": "array", "items": event, "minItems": 1, "maxItems": MAX_BATCH}
        return {"oneOf": [event, batch]}

    def read(self, value: Any, name: str, errors: Errors) -> Any:
        raise NotImplementedError("pixel events are validated by check_event")


class Declared(Field):
    """A schema the document shows for what this package checks by hand (a GIF parameter: read by
    query_event and check_event) or answers (a batch's per-event result)."""

    def __init__(self, schema: dict[str, Any], description: str | None = None, json: bool = False):
        self.declared, self.description, self.json = schema, description, json

    def schema(self) -> dict[str, Any]:
        return dict(self.declared)

    def read(self, value: Any, name: str, errors: Errors) -> Any:
        raise NotImplementedError("pixel events are validated by check_event")


class GifQuery(Query):
    """The GIF's parameters; a JSON-valued one (properties) is declared by its content, as OpenAPI
    says a parameter holding JSON text is."""

    def parameters(self) -> list[dict[str, Any]]:
        params = super().parameters()
        for param in params:
            field = self.fields[param["name"]]
            if isinstance(field, Declared) and field.json:
                param["content"] = {"application/json": {"schema": param.pop("schema")}}
        return params


def gif_query() -> GifQuery:
    """GET /pixel/track's parameters: the event's fields as text (unknown ones, cache busters, are ignored)."""
    event = event_schema()["properties"]

    def text(name: str) -> dict[str, Any]:
        return {k: v for k, v in event[name].items() if k != "description"} | {"type": "string"}

    integer, string, _null = timestamp_schema()["anyOf"]
    return GifQuery(
        {
            "event": Declared(text("event"), "Default: pageview"),
            "url": Declared(
                text("url"),
                "The page (required; a browser's <img> that leaves it out is answered for its Referer header)",
            ),
            "referrer": Declared(text("referrer")),
            "user_agent": Declared(text("user_agent"), event["user_agent"]["description"]),
            "properties": Declared(
                {k: v for k, v in properties_schema().items() if k != "description"} | {"type": "object"},
                "JSON text of an object. " + properties_schema()["description"],
                json=True,
            ),
            "timestamp": Declared({"anyOf": [integer, string]}, timestamp_schema()["description"]),
            "sample_key": Declared({**event["sample_key"], "type": "number"}, event["sample_key"]["description"]),
        },
        required=["url"],
    )


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1.5 µs more per event
class TrackedInput:
    """One event as the client sent it, every field checked."""

    event: str
    url: str
    host: str  # lowercased, without port: the key that finds the site
    parts: SplitResult
    referrer: str
    user_agent: str  # "" means: take the request's User-Agent header
    properties: str  # JSON text of the object, "{}" when absent
    client_ms: int | None
    sample_key: float | None  # the client script's sampling draw, in [0, 1)


def body_source(content_type: bytes | None) -> str:
    """ "beacon" for text/plain, "json" for JSON (or no type); other types are refused."""
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    if media not in JSON_TYPES and not (media.startswith(b"application/") and media.endswith(b"+json")):
        raise UnsupportedContentType("Content-Type must be application/json or text/plain.")
    return "beacon" if media == b"text/plain" else "json"


def parse_events(raw: bytes, max_batch: int) -> tuple[list, bool]:
    """(items, is_batch) from a body holding one event object or an array of them."""
    if not raw.strip():
        raise ValidationFailed({"body": ["An event object or an array of events is required."]})
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"Malformed JSON body: {exc}.") from None  # the message carries the detail
    if isinstance(data, dict):
        return [data], False
    if not isinstance(data, list):
        raise ValidationFailed({"body": ["The body must be an event object or an array of events."]})
    if not data:
        raise ValidationFailed({"body": ["The array of events must not be empty."]})
    if len(data) > max_batch:
        raise ValidationFailed({"body": [f"A batch holds at most {max_batch} events; this one has {len(data)}."]})
    return data, True


def query_event(query: dict[str, list[str]], referer: str | None) -> dict[str, Any]:
    """The GIF variant's event from its query string; unknown parameters (cache busters) are ignored."""
    data: dict[str, Any] = {name: values[0] for name, values in query.items() if name in FIELDS and values}
    data.setdefault("event", "pageview")
    if "url" not in data and referer:
        data["url"] = referer
    if "properties" in data:
        try:
            parsed = orjson.loads(data["properties"])
        except orjson.JSONDecodeError:
            parsed = None
        # Anything but an object (null too: a parameter is given or left out) stays text,
        # refused below as "must be an object".
        if isinstance(parsed, dict):
            data["properties"] = parsed
    if "timestamp" in data:
        data["timestamp"] = _epoch_ms(data["timestamp"])
    if "sample_key" in data:
        data["sample_key"] = _number(data["sample_key"])
    return data


def _epoch_ms(text: str):
    """Epoch milliseconds when the text is ASCII digits in range; else the text, read below as RFC 3339."""
    try:
        return parse_int(text, 0, TIME_MAX_MS)
    except ValueError:
        return text


def _number(text: str):
    return float(text) if _JSON_NUMBER.fullmatch(text) else text


def check_event(data) -> TrackedInput | Errors:
    """The event, or its errors by field."""
    if not isinstance(data, dict):
        return {"event": ["Each event must be a JSON object."]}
    errors: Errors = {}
    for name in data:
        if name not in FIELDS:
            errors[name] = [f"Unknown field; allowed: {', '.join(FIELDS)}."]
    event = _event_name(data.get("event"), errors)
    page = _page_url(data.get("url"), errors)
    referrer = _optional_text(data, "referrer", REFERRER_MAX, errors)
    user_agent = _optional_text(data, "user_agent", USER_AGENT_MAX, errors)
    properties = check_properties(data.get("properties"), errors)
    client_ms = _timestamp(data.get("timestamp"), errors)
    sample_key = _sample_key(data.get("sample_key"), errors)
    if errors or page is None:  # page is None only with an error recorded
        return errors
    url, parts, host = page
    return TrackedInput(event, url, host.rstrip("."), parts, referrer, user_agent, properties, client_ms, sample_key)


def _event_name(value, errors: Errors) -> str:
    if value is None:
        errors["event"] = ["The event field is required."]
    elif not isinstance(value, str) or not _EVENT_NAME.fullmatch(value):
        errors["event"] = ["The event must be 1-64 characters of letters, digits and _ . : -"]
    return value


def _page_url(value, errors: Errors) -> tuple[str, SplitResult, str] | None:
    """(url, its parts, its lowercased host), None when invalid: URL says which are valid, and
    urlsplit cannot refuse one it admits."""
    if value is None:
        errors["url"] = ["The url field is required."]
        return None
    if not isinstance(value, str) or len(value) > URL_MAX:
        errors["url"] = [f"The url must be a string of at most {URL_MAX} characters."]
        return None
    if not _URL.fullmatch(value):
        errors["url"] = ["The url must be an absolute http(s) URL with a host name."]
        return None
    parts = urlsplit(value)
    return value, parts, parts.hostname or ""


def page_host(data: object) -> str | None:
    """The lowercased host of an item's url when it is a valid page URL, else None (no validation
    of the rest: for scoping and counting what is refused)."""
    url = data.get("url") if isinstance(data, dict) else None
    if not isinstance(url, str) or len(url) > URL_MAX or not _URL.fullmatch(url):
        return None
    return (urlsplit(url).hostname or "").rstrip(".")


def _optional_text(data: dict, name: str, max_len: int, errors: Errors) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_len:
        errors[name] = [f"The {name} must be a string of at most {max_len} characters."]
        return ""
    return value


def check_properties(value, errors: Errors) -> str:
    """The properties as JSON text; records an error for a non-object, too deep, too wide or too big."""
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        errors["properties"] = ["The properties must be an object."]
        return "{}"
    problem = _shape_problem(value)
    if problem is None:
        text = orjson.dumps(value)
        if len(text) <= PROPERTIES_MAX_BYTES:
            return text.decode()
        problem = f"The properties may not exceed {PROPERTIES_MAX_BYTES} bytes as JSON."
    errors["properties"] = [problem]
    return "{}"


def _shape_problem(root: dict) -> str | None:
    """Walks at most PROPERTIES_MAX_DEPTH levels, so a deeply nested body costs nothing extra."""
    keys, depth = 0, 1
    level: list[dict | list] = [root]
    while level:
        if depth > PROPERTIES_MAX_DEPTH:
            return f"The properties may not be nested deeper than {PROPERTIES_MAX_DEPTH} levels."
        children: list[dict | list] = []
        for container in level:
            values = container.values() if isinstance(container, dict) else container
            keys += len(container) if isinstance(container, dict) else 0
            for value in values:
                if isinstance(value, (dict, list)):
                    children.append(value)
                elif not isinstance(value, SCALARS):
                    return "The properties hold only JSON values."
        if keys > PROPERTIES_MAX_KEYS:
            return f"The properties may not have more than {PROPERTIES_MAX_KEYS} keys."
        level, depth = children, depth + 1
    return None


def _timestamp(value, errors: Errors) -> int | None:
    if value is None:
        return None
    ms: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif isinstance(value, float) and value.is_integer():  # JSON Schema's integer: 2.0 is one
        ms = int(value)
    elif isinstance(value, str) and len(value) <= TIMESTAMP_TEXT_MAX and _TIMESTAMP_TEXT.fullmatch(value):
        return int(parse_datetime(value).timestamp() * 1000)
    if ms is None or not TIME_MIN_MS <= ms < TIME_MAX_MS:
        errors["timestamp"] = ["The timestamp must be epoch milliseconds or an RFC 3339 date-time, in 2000-2099."]
        return None
    return ms


def _sample_key(value, errors: Errors) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        errors["sample_key"] = ["The sample_key must be a number in [0, 1)."]
        return None
    return float(value)
