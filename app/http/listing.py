"""The listing behaviour every list endpoint shares: page, per_page, filters, sort, fields, include.

Parses the query string against a resource's ListingSpec (storage/postgres/listing.py) and
shapes the spec's `data` / `meta` / `links` answer with absolute links.
"""

import math
from collections.abc import Collection
from urllib.parse import urlencode

from blacksheep import Request

from app.http.errors import ValidationFailed
from app.http.validation import YEAR_MAX, YEAR_MIN, parse_datetime, parse_int, storable
from storage.postgres.listing import ListingSpec, ListQuery

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
# Postgres OFFSET past ~2^31 rows is meaningless here; the bound keeps the arithmetic sane.
MAX_PAGE = 1_000_000
MAX_SEARCH = 100
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
    return raw


def _names(raw: str | None, name: str, allowed: Collection[str], errors: Errors) -> list[str]:
    if raw is None:
        return []
    names = [part.strip() for part in raw.split(",")]
    unknown = (
        [n for n in names if n.lstrip("-") not in allowed] if name == "sort" else [n for n in names if n not in allowed]
    )
    if unknown or not all(names):
        shown = ", ".join(repr(n) for n in unknown) or "an empty name"
        errors.setdefault(name, []).append(f"Unknown {name} field {shown}; allowed: {', '.join(sorted(allowed))}.")
    return names


def parse_list_query(request: Request, spec: ListingSpec) -> ListQuery:
    """A validated ListQuery, or ValidationFailed naming every bad parameter."""
    query = request.query
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
        if status not in spec.statuses:
            allowed = ", ".join(spec.statuses) or "none for this resource"
            errors.setdefault("status", []).append(f"The status must be one of: {allowed}.")
        result.status = status
    search = _text(_single(query, "search", errors), "search", errors)
    if search is not None:
        if not spec.search_columns:
            errors.setdefault("search", []).append("This resource does not support search.")
        elif len(search) > MAX_SEARCH:
            errors.setdefault("search", []).append(f"The search may not be greater than {MAX_SEARCH} characters.")
        result.search = search
    for param, (column, op) in DATE_PARAMS.items():
        raw = _single(query, param, errors)
        if raw is None:
            continue
        try:
            result.date_bounds.append((column, op, parse_datetime(raw)))
        except ValueError:
            errors.setdefault(param, []).append(
                f"The {param} must be an ISO 8601 date or date-time in the years {YEAR_MIN}-{YEAR_MAX}."
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
