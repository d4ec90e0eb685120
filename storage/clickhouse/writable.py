"""Storage, for tests only: a chdb session that runs any statement, as a ClickHouse server does for
a client allowed to write. tests/clickhouse_server.py serves it over ClickHouse's HTTP interface
(storage/clickhouse/http_interface.py, `Settings.writable`), so the whole stack runs in server mode
(CLICKHOUSE_URL=http://…) on the real engine without a ClickHouse binary.

Nothing in the product's configuration reaches it: the ingest worker's interface answers with
read-only sessions only (storage/clickhouse/readers.py). Here DDL, SELECTs and `INSERT … FORMAT X`
with its rows inline (the request body follows the statement) run as sent, one statement per
request, and the answer comes whole rather than streamed.
"""

import contextlib
import re
from collections.abc import Generator, Mapping

import chdb

from storage.clickhouse.readers import SYNTAX_ERROR, Checked, QueryError, quoted, refuse_unknown

# The FORMAT clause that ends a query names its output (an INSERT's FORMAT is followed by its rows).
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.IGNORECASE)
# How much of a query's end to search for it: rows of an INSERT can be megabytes.
FORMAT_TAIL = 200


class WritableSession:
    """One chdb session of its own; `written` is (rows, bytes) the last statement wrote."""

    def __init__(self, directory: str):
        self.conn = chdb.connect(directory)
        self.written = (0, 0)

    def close(self) -> None:
        self.conn.close()

    def use(self, database: str) -> None:
        self._query("USE `" + database.replace("\\", "\\\\").replace("`", "\\`") + "`")

    def check(self, sql: str, params: Mapping[str, str] | None = None) -> Checked:
        """The statement as sent, and the output format it names, if any; nothing is refused."""
        if not sql.strip():
            raise QueryError(SYNTAX_ERROR, "Empty query")
        named = TRAILING_FORMAT.search(sql[-FORMAT_TAIL:])
        return Checked(sql, named.group(1) if named else None, streamable=False)

    def stream(
        self, checked: Checked, fmt: str, params: Mapping[str, str], settings: Mapping[str, str]
    ) -> Generator[bytes, None, None]:
        """The whole answer in `fmt` (a FORMAT clause wins), with `settings` for this statement only."""
        refuse_unknown(settings)
        self.written = (0, 0)
        try:
            if settings:
                self._query("SET " + ", ".join(f"{name} = {quoted(value)}" for name, value in settings.items()))
            result = self.conn.query(checked.sql, fmt, params=dict(params) or None)
            self.written = (result.rows_written(), result.bytes_written())
            answer = result.bytes()
        except RuntimeError as exc:
            raise QueryError.from_engine(exc) from None
        finally:
            if settings:  # a SET persists on the session, and the next statement is someone else's
                with contextlib.suppress(QueryError):
                    self._query("SET " + ", ".join(f"{name} = DEFAULT" for name in settings))
        yield answer

    def _query(self, sql: str) -> None:
        try:
            self.conn.query(sql, "TabSeparatedRaw")
        except RuntimeError as exc:
            raise QueryError.from_engine(exc) from None
