"""One page of a list endpoint as SQL: filters, search, sort, LIMIT/OFFSET and the total.

Every identifier that reaches the SQL text comes from a ListingSpec written in code;
request values only ever travel as bind parameters.
"""

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from storage.postgres.pool import Connection


@dataclass(frozen=True)
class ListingSpec:
    """What a resource allows in a listing, and the SQL behind each name."""

    from_sql: str
    select_sql: str
    sort_columns: dict[str, str]
    fields: tuple[str, ...]
    filters: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    search_columns: tuple[str, ...] = ()
    date_columns: dict[str, str] = field(default_factory=dict)
    includes: tuple[str, ...] = ()
    default_sort: tuple[tuple[str, bool], ...] = (("id", False),)
    tiebreak: str = "id"


@dataclass
class ListQuery:
    """A validated listing request (app/http/listing.py builds it from the query string)."""

    page: int = 1
    per_page: int = 25
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    filters: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    search: str | None = None
    date_bounds: list[tuple[str, str, datetime]] = field(default_factory=list)  # (column, op, value)
    fields: list[str] | None = None
    include: list[str] = field(default_factory=list)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(spec: ListingSpec, query: ListQuery, scope_sql: str, args: list) -> str:
    conditions = [scope_sql]
    for name, value in query.filters.items():
        args.append(value)
        conditions.append(f"{spec.filters[name]} = ${len(args)}")
    if query.status is not None:
        conditions.append(spec.statuses[query.status])
    for date_field, op, bound in query.date_bounds:
        args.append(bound)
        conditions.append(f"{spec.date_columns[date_field]} {op} ${len(args)}")
    if query.search:
        args.append(f"%{_escape_like(query.search)}%")
        ors = " OR ".join(f"{column} ILIKE ${len(args)}" for column in spec.search_columns)
        conditions.append(f"({ors})")
    return " AND ".join(conditions)


def _order_by(spec: ListingSpec, query: ListQuery) -> str:
    sort = query.sort or list(spec.default_sort)
    parts = [f"{spec.sort_columns[name]} {'DESC' if desc else 'ASC'}" for name, desc in sort]
    if not any(name == spec.tiebreak for name, _ in sort):
        # A unique last key makes pages stable when sort values tie.
        parts.append(f"{spec.sort_columns[spec.tiebreak]} ASC")
    return ", ".join(parts)


async def fetch_page(
    conn: Connection | asyncpg.Pool,
    spec: ListingSpec,
    query: ListQuery,
    scope_sql: str,
    scope_args: list,
) -> tuple[list[dict], int]:
    """Return the rows of the requested page and the total count of matching rows."""
    args = list(scope_args)
    where = _where(spec, query, scope_sql, args)
    offset = (query.page - 1) * query.per_page
    sql = (
        f"SELECT {spec.select_sql}, count(*) OVER () AS _total FROM {spec.from_sql} "
        f"WHERE {where} ORDER BY {_order_by(spec, query)} "
        f"LIMIT {int(query.per_page)} OFFSET {int(offset)}"
    )
    rows = await conn.fetch(sql, *args)
    if rows:
        return [_without_total(row) for row in rows], rows[0]["_total"]
    # Past the last page the window count has no row to ride on.
    total = await conn.fetchval(f"SELECT count(*) FROM {spec.from_sql} WHERE {where}", *args)
    return [], total


def _without_total(row: asyncpg.Record) -> dict:
    data = dict(row)
    del data["_total"]
    return data
