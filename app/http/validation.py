"""Stage "parse and validate": the one way request input becomes values, wherever it arrives
(query strings, path ids, headers, JSON bodies, tool arguments), and Checker, which reads a body
field by field and collects every error before answering 422.

Each parser refuses with ValueError, never with a wider error a caller would not expect:
`str.isdigit()` accepts "²", which int() refuses; int() refuses strings past 4,300 digits;
converting a date near year 1 or 9999 to UTC overflows; urlsplit raises on a malformed IPv6 host.
"""

import enum
import re
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, overload
from urllib.parse import SplitResult, urlsplit

import orjson
from typing_extensions import TypeIs

from app.http.errors import ValidationFailed

T = TypeVar("T")


class Missing(enum.Enum):
    """A field Checker found absent or refused: what its accessors answer instead of a value."""

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


def parse_datetime(text: str) -> datetime:
    """ISO 8601 date or date-time, in UTC (a value without offset is taken as UTC), years 1970-9999."""
    if not isinstance(text, str) or not 10 <= len(text) <= DATETIME_MAX_LEN:
        raise ValueError("not an ISO 8601 date")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:  # what "Z" and "+00:00" give
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+14:00 is in year 0 in UTC
            raise ValueError("out of range") from None
    if not YEAR_MIN <= value.year <= YEAR_MAX:
        raise ValueError(f"outside the years {YEAR_MIN}-{YEAR_MAX}")
    return value


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


class Checker:
    """Reads fields out of a dict; each accessor records an error instead of raising."""

    def __init__(self, data: dict, allowed: tuple[str, ...] | None = None):
        self.data = data
        self.errors: dict[str, list[str]] = {}
        if allowed is not None:
            for name in data:
                if name not in allowed:
                    self.fail(name, f"Unknown field; allowed: {', '.join(allowed)}.")

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def _get(self, name: str, required: bool, nullable: bool) -> Any | Missing:
        value = self.data.get(name, MISSING)
        if value is MISSING:
            if required:
                self.fail(name, f"The {name} field is required.")
            return MISSING
        if value is None and not nullable:
            self.fail(name, f"The {name} field may not be null.")
            return MISSING
        return value

    def string(
        self, name: str, *, required: bool = False, max_len: int = 255, pattern: re.Pattern[str] | None = None
    ) -> str | Missing:
        value = self._get(name, required, False)
        if value is MISSING:
            return value
        if not isinstance(value, str):
            self.fail(name, f"The {name} must be a string.")
        elif not value.strip():
            self.fail(name, f"The {name} must not be blank.")
        elif len(value) > max_len:
            self.fail(name, f"The {name} may not be greater than {max_len} characters.")
        elif not storable(value):
            self.fail(name, f"The {name} may not contain NUL characters.")
        elif pattern is not None and not pattern.fullmatch(value):
            self.fail(name, f"The {name} format is invalid.")
        else:
            return value
        return MISSING

    def url(
        self, name: str, schemes: tuple[str, ...], *, required: bool = False, max_len: int = 2048
    ) -> tuple[str, SplitResult] | tuple[Missing, None]:
        """(url, its parts) of an absolute URL of one of the schemes; (MISSING, None) otherwise."""
        url = self.string(name, required=required, max_len=max_len)
        if not present(url):
            return MISSING, None
        try:
            return url, split_url(url, schemes)
        except ValueError:
            self.fail(name, f"The {name} must be an absolute {' or '.join(schemes)} URL.")
            return MISSING, None

    @overload
    def choice(
        self, name: str, choices: Collection[str], *, required: bool = ..., nullable: Literal[False] = ...
    ) -> str | Missing: ...
    @overload
    def choice(
        self, name: str, choices: Collection[str], *, required: bool = ..., nullable: bool
    ) -> str | None | Missing: ...
    def choice(
        self, name: str, choices: Collection[str], *, required: bool = False, nullable: bool = False
    ) -> str | None | Missing:
        value = self._get(name, required, nullable)
        if value is MISSING or value is None:
            return value
        if not isinstance(value, str) or value not in choices:
            self.fail(name, f"The {name} must be one of: {', '.join(choices)}.")
            return MISSING
        return value

    def integer(self, name: str, *, minimum: int, maximum: int, required: bool = False) -> int | Missing:
        value = self._get(name, required, False)
        if value is MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"The {name} must be an integer.")
        elif not minimum <= value <= maximum:
            self.fail(name, f"The {name} must be between {minimum} and {maximum}.")
        else:
            return value
        return MISSING

    def timestamp(self, name: str, *, required: bool = False) -> datetime | None | Missing:
        """A date-time, or None for an explicit null."""
        value = self._get(name, required, True)
        if value is MISSING or value is None:
            return value
        try:
            return parse_datetime(value)
        except (TypeError, ValueError):
            self.fail(name, f"The {name} must be an ISO 8601 date-time in the years {YEAR_MIN}-{YEAR_MAX}.")
            return MISSING

    def object(self, name: str, *, required: bool = False) -> dict[str, Any] | Missing:
        value = self._get(name, required, False)
        if value is MISSING:
            return value
        if not isinstance(value, dict):
            self.fail(name, f"The {name} must be an object.")
            return MISSING
        return value

    def string_list(self, name: str, *, required: bool = False, max_items: int = 100) -> list[str] | Missing:
        value = self._get(name, required, False)
        if value is MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"The {name} must be an array of strings.")
        elif not value:
            self.fail(name, f"The {name} must not be empty.")
        elif len(value) > max_items:
            self.fail(name, f"The {name} may not have more than {max_items} items.")
        elif not all(storable(v) for v in value):
            self.fail(name, f"The {name} may not contain NUL characters.")
        else:
            return value
        return MISSING

    def done(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def present(value: T | Missing) -> TypeIs[T]:
    """Whether a Checker accessor answered a value; narrows it to the value's type."""
    return value is not MISSING


def required(value: T | Missing) -> T:
    """A required field's value once Checker.done() has passed: had it been MISSING, its error
    would have made done() raise."""
    if value is MISSING:
        raise AssertionError("a required field was read before Checker.done()")
    return value
