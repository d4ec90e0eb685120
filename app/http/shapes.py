"""Shapes of what requests carry and responses answer, each declared once.

A declaration is both the validator the handler calls and the JSON Schema /openapi.json shows
(app/http/openapi.py), so the two cannot disagree: a value the schema admits is one the service
accepts, and one it refuses is refused with the spec's 422 envelope naming every bad field.

Patterns are written once in the dialect both readers share (ECMA-262 as JSON Schema means it,
Python's `re` as the service runs it): explicit character classes instead of `\\s`, `\\d` or `\\w`,
whose meaning differs between the two; `fullmatch` here is what `^…$` says there.
"""

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from app.http.errors import ValidationFailed
from app.http.validation import DATE_TIME, MISSING, Missing, parse_datetime, parse_int, query_values

Errors = dict[str, list[str]]
# Schemas of fields that name themselves (Field.ref), gathered as the document is built.
NAMED: dict[str, dict[str, Any]] = {}
# What str.isspace() calls whitespace, spelled out for both regex dialects.
WHITESPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
# Text Postgres can store that is not blank: no NUL, at least one character that is not whitespace.
NOT_BLANK = f"[^\\x00]*[^\\x00{WHITESPACE}][^\\x00]*"
NO_NUL = "[^\\x00]*"


def anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


class Field:
    """One value's rules: `schema()` for the document, `read()` for the request."""

    description: str | None = None
    example: Any = None
    ref: str | None = None  # a name in the document's components/schemas

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def read(self, value: Any, name: str, errors: Errors) -> Any:
        """The value to use, or MISSING after adding to errors why it is refused."""
        raise NotImplementedError

    def read_text(self, text: str, name: str, errors: Errors) -> Any:
        """The value of a query parameter, which is always text."""
        return self.read(text, name, errors)

    def documented(self) -> dict[str, Any]:
        """The schema as the document shows it: with description and example, and a `$ref` to
        components/schemas instead for a field that names itself (a long enum shown once)."""
        schema = self.schema()
        if self.description:
            schema["description"] = self.description
        if self.example is not None:
            schema["examples"] = [self.example]
        if self.ref is not None:
            NAMED[self.ref] = schema
            return {"$ref": f"#/components/schemas/{self.ref}"}
        return schema


def fail(errors: Errors, name: str, message: str) -> Missing:
    errors.setdefault(name, []).append(message)
    return MISSING


class Text(Field):
    """A string, not blank, without NUL, at most max_len characters; `pattern` narrows it further
    (it must refuse blank and NUL itself) and `message` says what the pattern wants."""

    def __init__(
        self,
        max_len: int = 255,
        pattern: str | None = None,
        message: str = "format is invalid",
        description: str | None = None,
        example: str | None = None,
        min_len: int = 1,
    ):
        self.max_len, self.min_len, self.message = max_len, min_len, message
        self.pattern = pattern
        self.compiled = re.compile(pattern if pattern is not None else NOT_BLANK)
        self.description, self.example = description, example

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": self.max_len}
        if self.min_len > 1:
            schema["minLength"] = self.min_len
        schema["pattern"] = anchored(self.pattern if self.pattern is not None else NOT_BLANK)
        return schema

    def read(self, value: Any, name: str, errors: Errors) -> str | Missing:
        if not isinstance(value, str):
            return fail(errors, name, f"The {name} must be a string.")
        if not value.strip() and self.pattern is None:
            return fail(errors, name, f"The {name} must not be blank.")
        if len(value) > self.max_len:
            return fail(errors, name, f"The {name} may not be greater than {self.max_len} characters.")
        if len(value) < self.min_len:
            return fail(errors, name, f"The {name} must be at least {self.min_len} characters.")
        if "\x00" in value:
            return fail(errors, name, f"The {name} may not contain NUL characters.")
        if not self.compiled.fullmatch(value):
            return fail(errors, name, f"The {name} {self.message}.")
        return value


class Choice(Field):
    def __init__(self, values: Sequence[str], description: str | None = None):
        self.values = tuple(values)
        self.allowed = frozenset(self.values)
        self.description = description

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}

    def read(self, value: Any, name: str, errors: Errors) -> str | Missing:
        if not isinstance(value, str) or value not in self.allowed:
            return fail(errors, name, f"The {name} must be one of: {', '.join(self.values)}.")
        return value


class Integer(Field):
    def __init__(self, minimum: int, maximum: int, description: str | None = None, example: int | None = None):
        self.minimum, self.maximum = minimum, maximum
        self.description, self.example = description, example

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}

    def read(self, value: Any, name: str, errors: Errors) -> int | Missing:
        # JSON Schema counts 2.0 as an integer; so does this.
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return fail(errors, name, f"The {name} must be an integer.")
        if not self.minimum <= value <= self.maximum:
            return fail(errors, name, f"The {name} must be between {self.minimum} and {self.maximum}.")
        return value

    def read_text(self, text: str, name: str, errors: Errors) -> int | Missing:
        try:
            return parse_int(text, self.minimum, self.maximum)  # a query integer is never negative
        except ValueError:
            return fail(errors, name, f"The {name} must be an integer between {self.minimum} and {self.maximum}.")


class Number(Field):
    def __init__(self, minimum: float, maximum: float, description: str | None = None):
        self.minimum, self.maximum = minimum, maximum
        self.description = description

    def schema(self) -> dict[str, Any]:
        return {"type": "number", "minimum": self.minimum, "maximum": self.maximum}

    def read(self, value: Any, name: str, errors: Errors) -> float | Missing:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return fail(errors, name, f"The {name} must be a number.")
        if not self.minimum <= value <= self.maximum:
            return fail(errors, name, f"The {name} must be between {self.minimum:g} and {self.maximum:g}.")
        return float(value)


class Boolean(Field):
    def __init__(self, description: str | None = None):
        self.description = description

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def read(self, value: Any, name: str, errors: Errors) -> bool | Missing:
        if not isinstance(value, bool):
            return fail(errors, name, f"The {name} must be true or false.")
        return value

    def read_text(self, text: str, name: str, errors: Errors) -> bool | Missing:
        if text not in ("true", "false"):
            return fail(errors, name, f"The {name} must be true or false.")
        return text == "true"


class DateTime(Field):
    """An RFC 3339 date-time (or date) in the years 1970-9999, read as a UTC datetime."""

    def __init__(self, description: str | None = None):
        self.description = description
        self.example = "2026-01-15T10:30:00Z"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": 40, "pattern": anchored(DATE_TIME)}

    def read(self, value: Any, name: str, errors: Errors) -> datetime | Missing:
        try:
            return parse_datetime(value)
        except ValueError:
            return fail(errors, name, f"The {name} must be an RFC 3339 date-time (or date) in the years 1970-9999.")


class Nullable(Field):
    """The inner field, or null (read as None)."""

    def __init__(self, inner: Field, description: str | None = None):
        self.inner = inner
        self.description = description or inner.description
        self.example = inner.example

    def schema(self) -> dict[str, Any]:
        # anyOf rather than a type list: generated clients read it as Optional[the inner type].
        return {"anyOf": [self.inner.documented(), {"type": "null"}]}

    def read(self, value: Any, name: str, errors: Errors) -> Any:
        return None if value is None else self.inner.read(value, name, errors)


class List(Field):
    """An array of items, min_items to max_items long; duplicates dropped, order kept, if `unique`."""

    def __init__(
        self, item: Field, max_items: int, min_items: int = 1, unique: bool = False, description: str | None = None
    ):
        self.item, self.min_items, self.max_items, self.unique = item, min_items, max_items, unique
        self.description = description

    def schema(self) -> dict[str, Any]:
        return {
            "type": "array",
            "items": self.item.documented(),
            "minItems": self.min_items,
            "maxItems": self.max_items,
        }

    def read(self, value: Any, name: str, errors: Errors) -> list | Missing:
        if not isinstance(value, list):
            return fail(errors, name, f"The {name} must be an array.")
        if len(value) < self.min_items:
            return fail(errors, name, f"The {name} must have at least {self.min_items} item(s).")
        if len(value) > self.max_items:
            return fail(errors, name, f"The {name} may not have more than {self.max_items} items.")
        items, bad = [], False
        for item in value:
            read = self.item.read(item, name, errors)
            bad = bad or read is MISSING
            items.append(read)
        if bad:
            return MISSING
        return list(dict.fromkeys(items)) if self.unique else items


class Object(Field):
    """A JSON object with exactly these fields (no others); `required` names those it must have."""

    def __init__(
        self,
        fields: Mapping[str, Field],
        required: Sequence[str] = (),
        description: str | None = None,
        prefix: str = "",
    ):
        self.fields = dict(fields)
        self.required = tuple(required)
        self.description = description
        self.prefix = prefix

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: field.documented() for name, field in self.fields.items()},
            "additionalProperties": False,
        }
        if self.required:
            schema["required"] = list(self.required)
        return schema

    def read(self, value: Any, name: str, errors: Errors) -> dict[str, Any] | Missing:
        if not isinstance(value, dict):
            return fail(errors, name or "body", f"The {name or 'body'} must be an object.")
        prefix = f"{name}." if name else ""
        allowed = ", ".join(self.fields) or "none"
        for key in value:
            if key not in self.fields:
                fail(errors, prefix + key, f"Unknown field; allowed: {allowed}.")
        result: dict[str, Any] = {}
        for key, field in self.fields.items():
            if key not in value:
                if key in self.required:
                    fail(errors, prefix + key, f"The {prefix + key} field is required.")
                continue
            item = value[key]
            if item is None and not isinstance(field, Nullable):
                fail(errors, prefix + key, f"The {prefix + key} field may not be null.")
                continue
            read = field.read(item, prefix + key, errors)
            if read is not MISSING:
                result[key] = read
        return result

    def parse(self, data: Any) -> dict[str, Any]:
        """The fields present in a request body, validated; ValidationFailed naming every bad one."""
        errors: Errors = {}
        result = self.read(data, "", errors)
        if errors or result is MISSING:
            raise ValidationFailed(errors)
        return result


class Free(Field):
    """Any JSON value the description explains (properties, tool arguments): the service's own
    rules for it run after the shape's."""

    def __init__(self, kind: str | None = "object", description: str | None = None, max_props: int | None = None):
        self.kind, self.description, self.max_props = kind, description, max_props

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {} if self.kind is None else {"type": self.kind}
        if self.max_props is not None:
            schema["maxProperties"] = self.max_props
        return schema

    def read(self, value: Any, name: str, errors: Errors) -> Any:
        if self.kind == "object" and not isinstance(value, dict):
            return fail(errors, name, f"The {name} must be an object.")
        if self.max_props is not None and isinstance(value, dict) and len(value) > self.max_props:
            return fail(errors, name, f"The {name} may not have more than {self.max_props} keys.")
        return value


def response(fields: Mapping[str, Field], required: Sequence[str] | None = None) -> dict[str, Any]:
    """The schema of an answer's object: the fields it has; all of them unless `required` says
    which (a list's items may be cut down by `fields=`, so they require none)."""
    return Object(fields, list(fields) if required is None else required).schema()


class Query:
    """Query parameters: each a Field read from its text (integers and booleans from their digits
    and words), given at most once; parameters not declared are ignored, as HTTP caches and
    trackers add their own."""

    def __init__(self, fields: Mapping[str, Field], required: Sequence[str] = ()):
        self.fields = dict(fields)
        self.required = tuple(required)

    def parameters(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "in": "query",
                "required": name in self.required,
                "schema": field.schema(),
                **({"description": field.description} if field.description else {}),
            }
            for name, field in self.fields.items()
        ]

    def parse(self, request) -> dict[str, Any]:
        """The request's declared parameters, validated; blank ones count as given (`?limit=` is 422,
        as the schema says), which BlackSheep's `request.query` would drop."""
        return self.parse_values(query_values(request))

    def parse_values(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        errors: Errors = {}
        result: dict[str, Any] = {}
        for name, field in self.fields.items():
            values = query.get(name)
            if not values:
                if name in self.required:
                    fail(errors, name, f"The {name} parameter is required.")
                continue
            if len(values) > 1:
                fail(errors, name, f"The {name} parameter may be given only once.")
                continue
            read = field.read_text(values[0], name, errors)
            if read is not MISSING:
                result[name] = read
        if errors:
            raise ValidationFailed(errors)
        return result


class Url(Text):
    """An absolute URL of one of `schemes` in RFC 3986's ASCII grammar: a host name or dotted IPv4
    address (an IDN in its xn-- form; IP literals in brackets are not taken), no user info, a port
    in 1-65535, path, query and fragment with anything else percent-encoded. `addresses=False`
    takes host names only: no last label that is a number, which resolvers and browsers read as an
    IPv4 address in one of its spellings (127.1, 2130706433, 0x7f.1)."""

    LABEL = "[A-Za-z0-9_-]{1,63}"
    NUMBER = "(?:[0-9]+|0[xX][0-9A-Fa-f]*)"
    PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    SEGMENT = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*"
    QUERY = "(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*"

    def __init__(
        self,
        schemes: Sequence[str] = ("https",),
        max_len: int = 2048,
        description: str | None = None,
        example: str | None = None,
        addresses: bool = True,
    ):
        last = self.LABEL if addresses else f"(?!{self.NUMBER}\\.?(?:[:/?#]|$)){self.LABEL}"
        host = f"(?:{self.LABEL}\\.)*{last}\\.?"
        pattern = (
            f"(?:{'|'.join(schemes)})://{host}(?::{self.PORT})?(?:/{self.SEGMENT})*"
            f"(?:\\?{self.QUERY})?(?:#{self.QUERY})?"
        )
        kind = "URL" if addresses else "URL naming its host by name"
        super().__init__(max_len, pattern, f"must be an absolute {' or '.join(schemes)} {kind}", description, example)
