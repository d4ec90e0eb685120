"""The listing behaviour every list endpoint shares: page, per_page, filters, sort, fields, include.

Parses the query string against a resource's ListingSpec (storage/postgres/listing.py) and
shapes the spec's `data` / `meta` / `links` answer with absolute links.
"""

import math
import re
from collections.abc import Collection
from urllib.parse import urlencode

from blacksheep import Request

from app.http.errors import ValidationFailed
from app.http.validation import DATE_TIME, YEAR_MAX, YEAR_MIN, parse_datetime, parse_int, query_values, storable
from storage.postgres.listing import ListingSpec, ListQuery

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
# Postgres OFFSET past ~2^31 rows is meaningless here; the bound keeps the arithmetic sane.
MAX_PAGE = 1_000_000
MAX_SEARCH = 100
MAX_FILTER = 1000
# Parameter name → its messages, as ValidationFailed reports them.
Errors = dict[str, list[str]]
DATE_PARAMS = {
    "created_after": ("created", ">"),
    "created_before": ("created", "<"),
    "updated_after": ("updated", ">"),
    "updated_before": ("updated", "<"),
}


def _single(query: dict[str, list[str]], name: str, errors: Errors) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        errors.setdefault(name, []).append(f"The {name} parameter may be given only once.")
    return values[0]


def _bounded_int(raw: str | None, name: str, default: int, maximum: int, errors: Errors) -> int:
    if raw is None:
        return default
    try:
        return parse_int(raw, 1, maximum)
    except ValueError:
        errors.setdefault(name, []).append(f"The {name} must be an integer between 1 and {maximum}.")
        return default


def _text(raw: str | None, name: str, errors: Errors) -> str | None:
    """A filter or search value, which travels to Postgres as a bind parameter."""
    if raw is not None and not storable(raw):
        errors.setdefault(name, []).append(f"The {name} may not contain NUL characters.")
    elif raw is not None and len(raw) > MAX_FILTER:
        errors.setdefault(name, []).append(f"The {name} may not be greater than {MAX_FILTER} characters.")
    return raw


def _names(raw: str | None, name: str, allowed: Collection[str], errors: Errors) -> list[str]:
    """Comma-separated names, each one of `allowed` (for sort, with an optional leading -): what
    names_pattern() tells the document."""
    if raw is None:
        return []
    names = raw.split(",")
    if not allowed:
        errors.setdefault(name, []).append(f"This resource has no {name} options; leave {name} out.")
        return []
    unknown = [n for n in names if (n[1:] if name == "sort" and n.startswith("-") else n) not in allowed]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown)
        errors.setdefault(name, []).append(f"Unknown {name} field {shown}; allowed: {', '.join(sorted(allowed))}.")
    return names


def names_pattern(allowed: Collection[str], descending: bool = False) -> str:
    """The JSON Schema pattern of a comma-separated list of allowed names (sort: each may start with -)."""
    one = ("-?" if descending else "") + "(?:" + "|".join(re.escape(n) for n in sorted(allowed)) + ")"
    return f"^{one}(?:,{one})*$"


def listing_parameters(spec: ListingSpec) -> list[dict]:
    """The query parameters of a list endpoint for /openapi.json, from the spec parse_list_query reads."""
    text = {"type": "string", "maxLength": MAX_FILTER, "pattern": "^[^\\x00]*$"}
    params: list[tuple[str, dict, str]] = [
        ("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}, "Page number"),
        (
            "per_page",
            {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": DEFAULT_PER_PAGE},
            "Items per page",
        ),
        (
            "sort",
            {"type": "string", "pattern": names_pattern(spec.sort_columns, descending=True)},
            "Comma-separated fields; a leading - sorts descending",
        ),
        ("fields", {"type": "string", "pattern": names_pattern(spec.fields)}, "Comma-separated fields to return"),
    ]
    if spec.includes:
        params.append(
            ("include", {"type": "string", "pattern": names_pattern(spec.includes)}, "Comma-separated relations")
        )
    if spec.search_columns:
        search = {"type": "string", "maxLength": MAX_SEARCH, "pattern": "^[^\\x00]*$"}
        params.append(("search", search, f"Case-insensitive substring of {', '.join(spec.search_columns)}"))
    if spec.statuses:
        params.append(("status", {"type": "string", "enum": list(spec.statuses)}, "Only items in this status"))
    params += [(name, text, f"Only items whose {name} equals this exactly") for name in spec.filters]
    date = {"type": "string", "maxLength": 40, "pattern": f"^(?:{DATE_TIME})$"}
    for param, (column, op) in DATE_PARAMS.items():
        if column in spec.date_columns:
            when = "after" if op == ">" else "before"
            params.append((param, date, f"Only items {column} {when} this RFC 3339 date-time or date"))
    return [
        {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
        for name, schema, description in params
    ]


def parse_list_query(request: Request, spec: ListingSpec) -> ListQuery:
    """A validated ListQuery, or ValidationFailed naming every bad parameter."""
    query = query_values(request)
    errors: Errors = {}
    result = ListQuery(
        page=_bounded_int(_single(query, "page", errors), "page", 1, MAX_PAGE, errors),
        per_page=_bounded_int(_single(query, "per_page", errors), "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE, errors),
    )
    result.sort = [
        (n.lstrip("-"), n.startswith("-"))
        for n in _names(_single(query, "sort", errors), "sort", spec.sort_columns, errors)
    ]
    fields = _single(query, "fields", errors)
    result.fields = _names(fields, "fields", spec.fields, errors) if fields is not None else None
    result.include = _names(_single(query, "include", errors), "include", spec.includes, errors)
    for name in spec.filters:
        value = _text(_single(query, name, errors), name, errors)
        if value is not None:
            result.filters[name] = value
    status = _single(query, "status", errors)
    if status is not None:
        if not spec.statuses:
            errors.setdefault("status", []).append("This resource has no statuses to filter by; leave status out.")
        elif status not in spec.statuses:
            errors.setdefault("status", []).append(f"The status must be one of: {', '.join(spec.statuses)}.")
        result.status = status
    search = _text(_single(query, "search", errors), "search", errors)
    if search is not None:
        if not spec.search_columns:
            errors.setdefault("search", []).append("This resource does not support search; leave search out.")
        elif len(search) > MAX_SEARCH:
            errors.setdefault("search", []).append(f"The search may not be greater than {MAX_SEARCH} characters.")
        result.search = search
    for param, (column, op) in DATE_PARAMS.items():
        raw = _single(query, param, errors)
        if raw is None or column not in spec.date_columns:
            continue
        try:
            result.date_bounds.append((column, op, parse_datetime(raw)))
        except ValueError:
            errors.setdefault(param, []).append(
                f"The {param} must be an RFC 3339 date-time or date in the years {YEAR_MIN}-{YEAR_MAX}."
            )
    if errors:
        raise ValidationFailed(errors)
    return result


def page_meta(page: int, per_page: int, total: int, shown: int) -> dict:
    last_page = max(1, math.ceil(total / per_page))
    first = (page - 1) * per_page + 1
    return {
        "current_page": page,
        "from": first if shown else None,
        "last_page": last_page,
        "per_page": per_page,
        "to": first + shown - 1 if shown else None,
        "total": total,
    }


def page_links(base_url: str, query: dict[str, list[str]], page: int, last_page: int) -> dict:
    """Absolute links that keep every other query parameter as the client sent it."""
    kept = [(k, v) for k, values in query.items() if k != "page" for v in values]

    def link(number: int) -> str:
        return f"{base_url}?{urlencode(kept + [('page', str(number))])}"

    return {
        "first": link(1),
        "last": link(last_page),
        "prev": link(min(page - 1, last_page)) if page > 1 else None,
        "next": link(page + 1) if page < last_page else None,
    }


def select_fields(item: dict, fields: list[str] | None, include: list[str]) -> dict:
    """Keep the asked-for fields; included relations stay whatever `fields` says."""
    if fields is None:
        return item
    return {name: item[name] for name in (*fields, *include) if name in item}


def base_url(request: Request, public_url: str) -> str:
    """The absolute URL of this path, from SLUICE_PUBLIC_URL or else the request's Host."""
    root = public_url or f"{request.scheme}://{request.host}"
    return root + request.path


def page_body(request: Request, public_url: str, query: ListQuery, items: list[dict], total: int) -> dict:
    meta = page_meta(query.page, query.per_page, total, len(items))
    links = page_links(base_url(request, public_url), request.query, query.page, meta["last_page"])
    return {"data": [select_fields(i, query.fields, query.include) for i in items], "meta": meta, "links": links}


NULLABLE_PAGE = {"type": ["integer", "null"], "minimum": 1}
PAGE_LINK = {"type": ["string", "null"]}
PAGE_META = {
    "type": "object",
    "required": ["current_page", "from", "last_page", "per_page", "to", "total"],
    "additionalProperties": False,
    "properties": {
        "current_page": {"type": "integer", "minimum": 1},
        "from": NULLABLE_PAGE,
        "last_page": {"type": "integer", "minimum": 1},
        "per_page": {"type": "integer", "minimum": 1},
        "to": NULLABLE_PAGE,
        "total": {"type": "integer", "minimum": 0},
    },
}
PAGE_LINKS = {
    "type": "object",
    "required": ["first", "last", "prev", "next"],
    "additionalProperties": False,
    "properties": {"first": {"type": "string"}, "last": {"type": "string"}, "prev": PAGE_LINK, "next": PAGE_LINK},
}


def page_answer(item: dict) -> dict:
    """The JSON Schema of a list endpoint's answer whose items have the given schema."""
    return {
        "type": "object",
        "required": ["data", "meta", "links"],
        "additionalProperties": False,
        "properties": {"data": {"type": "array", "items": item}, "meta": PAGE_META, "links": PAGE_LINKS},
    }
