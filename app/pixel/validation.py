"""Pixel stage "parse and validate": request bodies and GIF query strings → TrackedInput, or
the per-field errors of each event (the batch form answers each event on its own).

Written out by hand rather than through app/http/validation.py's Checker: this is the hot path,
and an empty referrer (the common case) is valid here where Checker refuses blank strings.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import orjson

from app.http.errors import InvalidJson, PayloadTooLarge, UnsupportedContentType, ValidationFailed
from app.http.validation import parse_datetime, parse_int, storable

EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
URL_MAX = 2048  # what browsers and CDNs reliably pass through
REFERRER_MAX = 2048
USER_AGENT_MAX = 512  # real browsers stay under 300 characters
PROPERTIES_MAX_BYTES = 8192
PROPERTIES_MAX_DEPTH = 3  # the properties object itself is depth 1
PROPERTIES_MAX_KEYS = 50  # counted over every nested object
FIELDS = ("event", "url", "referrer", "user_agent", "properties", "timestamp", "sample_key")
# ClickHouse's DateTime64 holds 1900-2299; a client clock outside this range is not a clock.
TIME_MIN_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
TIME_MAX_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)
SCALARS = (str, int, float, bool, type(None))
JSON_TYPES = (b"application/json", b"text/plain", b"")  # text/plain: what sendBeacon sends


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


Errors = dict[str, list[str]]


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
        raise PayloadTooLarge(f"A batch holds at most {max_batch} events; this one has {len(data)}.")
    return data, True


def query_event(query: dict[str, list[str]], referer: str | None) -> dict[str, Any]:
    """The GIF variant's event from its query string; unknown parameters (cache busters) are ignored."""
    data: dict[str, Any] = {name: values[0] for name, values in query.items() if name in FIELDS and values}
    data.setdefault("event", "pageview")
    if "url" not in data and referer:
        data["url"] = referer
    if "properties" in data:
        try:
            data["properties"] = orjson.loads(data["properties"])
        except orjson.JSONDecodeError:
            pass  # left as text: refused below as "must be an object"
    if "timestamp" in data:
        data["timestamp"] = _epoch_ms(data["timestamp"])
    if "sample_key" in data:
        data["sample_key"] = _number(data["sample_key"])
    return data


def _epoch_ms(text: str):
    """Epoch milliseconds when the text is ASCII digits in range; else the text, read below as ISO 8601."""
    try:
        return parse_int(text, 0, TIME_MAX_MS)
    except ValueError:
        return text


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


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
    elif not isinstance(value, str) or not EVENT_NAME.fullmatch(value):
        errors["event"] = ["The event must be 1-64 characters of letters, digits and _ . : -"]
    return value


def _page_url(value, errors: Errors) -> tuple[str, SplitResult, str] | None:
    """(url, its parts, its lowercased host), None when invalid; the host is computed once (a
    property costing ~1 µs)."""
    if value is None:
        errors["url"] = ["The url field is required."]
        return None
    if not isinstance(value, str) or len(value) > URL_MAX:
        errors["url"] = [f"The url must be a string of at most {URL_MAX} characters."]
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = parts = None
    # The host is looked up in Postgres (app/pixel/sites.py), which cannot take a NUL.
    if parts is None or parts.scheme not in ("http", "https") or not host or not storable(host):
        errors["url"] = ["The url must be an absolute http(s) URL."]
        return None
    return value, parts, host


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
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = int(value)
    else:
        try:
            ms = int(parse_datetime(value).timestamp() * 1000)
        except (TypeError, ValueError):
            ms = None
    if ms is None or not TIME_MIN_MS <= ms < TIME_MAX_MS:
        errors["timestamp"] = ["The timestamp must be an ISO 8601 date-time or epoch milliseconds (2000-2099)."]
        return None
    return ms


def _sample_key(value, errors: Errors) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        errors["sample_key"] = ["The sample_key must be a number in [0, 1)."]
        return None
    return float(value)
