"""Stage "parse and validate": the one way request input becomes values, wherever it arrives
(query strings, path ids, headers, JSON bodies, tool arguments). The declarations built on it,
which validate whole bodies and query strings and show them in /openapi.json, are app/http/shapes.py.

Each parser refuses with ValueError, never with a wider error a caller would not expect:
`str.isdigit()` accepts "²", which int() refuses; int() refuses strings past 4,300 digits;
converting a date near year 1 or 9999 to UTC overflows; urlsplit raises on a malformed IPv6 host.
"""

import enum
import re
from datetime import UTC, datetime
from typing import Final
from urllib.parse import SplitResult, parse_qs, urlsplit

import orjson


class Missing(enum.Enum):
    """A field a shape (app/http/shapes.py) found absent or refused: what it answers instead of a value."""

    MISSING = "MISSING"


MISSING: Final = Missing.MISSING
# Postgres bigint: the type of every id column, and the largest bound any caller needs.
ID_MAX = 2**63 - 1
INT_DIGITS_MAX = len(str(ID_MAX))  # 19
DATETIME_MAX_LEN = 40  # the longest ISO 8601 form: date, time with nanoseconds, offset
# Years every layer handles: Python, Postgres, ClickHouse's DateTime64 and epoch arithmetic.
YEAR_MIN, YEAR_MAX = 1970, 9999
# Postgres text and jsonb refuse NUL; a lone surrogate is not UTF-8 at all (orjson never yields
# one from a body, but decoded query strings and path segments are not orjson's).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse_int(text: str, minimum: int, maximum: int) -> int:
    """ASCII digits naming an integer in [minimum, maximum], else ValueError (0 <= minimum,
    maximum <= ID_MAX: longer strings are refused before int() reads them)."""
    if not isinstance(text, str) or len(text) > INT_DIGITS_MAX or not (text.isascii() and text.isdigit()):
        raise ValueError("not a whole number of at most 19 ASCII digits")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValueError(f"not between {minimum} and {maximum}")
    return value


def parse_id(text: str) -> int:
    """A row id: 1 to the largest bigint, in ASCII digits."""
    return parse_int(text, 1, ID_MAX)


# RFC 3339 in UTC or with an offset (none means UTC), or a bare date; years 1970-9999; only
# calendar dates (February 29 in leap years only).
_YEAR = "(?:19[7-9][0-9]|[2-9][0-9]{3})"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_YEAR = "(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[3579][26])00)"
DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
DATE_TIME = f"{DATE}(?:T{TIME})?"
_DATE_TIME = re.compile(DATE_TIME)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
# One microsecond short of the last one: asyncpg writes 9999-12-31T23:59:59.999999Z as Postgres'
# `infinity`, which reads back as a date-time without a zone.
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)


def parse_datetime(text: str) -> datetime:
    """A value DATE_TIME matches, in UTC; an offset that carries it past 1970-9999 clamps to the
    bound (a 14-hour difference at the ends of the range). ValueError for anything else."""
    if not isinstance(text, str) or len(text) > 40 or not _DATE_TIME.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time or date")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    else:
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-02:00 is in year 10000 in UTC
            return LATEST
    return min(max(value, EARLIEST), LATEST)


def query_values(request) -> dict[str, list[str]]:
    """The query string's parameters, blank ones included: `?page=` is a page given as nothing (422),
    not a page left out, as the parameter's schema says (BlackSheep's `request.query` drops it)."""
    raw = request.url.query
    return parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True) if raw else {}


def storable(text: str) -> bool:
    """Whether Postgres can store the text (no NUL, no lone surrogate)."""
    if text.isascii():  # the common case, and on the pixel's hot path: a third of the regex's cost
        return "\x00" not in text
    return UNSTORABLE.search(text) is None


def unstorable_key(value: dict) -> str | None:
    """The first top-level key whose value (or the key itself) holds text Postgres cannot store
    in jsonb, or None. Iterative: a body may nest as deep as orjson parses (1,024 levels)."""
    for key, item in value.items():
        stack = [key, item]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                if not storable(node):
                    return key
            elif isinstance(node, dict):
                stack.extend(node.keys())
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return None


def json_size(value) -> int | None:
    """Bytes of value as JSON; None when orjson will not encode it (nested past 254 levels)."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return None


def split_url(text: str, schemes: tuple[str, ...]) -> SplitResult:
    """An absolute URL of one of the schemes, with a host and a valid port, else ValueError."""
    parts = urlsplit(text)  # ValueError: a bracketed host that is not an IPv6 address
    if parts.scheme not in schemes or not parts.hostname or any(c.isspace() for c in text):
        raise ValueError("not an absolute URL")
    parts.port  # noqa: B018 - ValueError: a port that is not a number in 0-65535
    return parts
