"""Storage stage "read": analysts' SQL on the embedded engine, refused unless it only reads.

Each `ReaderConnection` is a chdb connection of its own (`chdb.connect(DIR)` opens a session on
the engine the process already runs), so its queries run beside the writer's inserts, never
queued behind them. The connection carries readonly=2 and the configured limits; what readonly
lets through (table functions that read files or URLs, INTO OUTFILE, KILL, SET, USE) is refused
first by `check`, which reads ClickHouse's own parse of the query (formatQuery, EXPLAIN AST).
The query that runs is formatQuery's text: one statement, whatever the caller sent.
"""

import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass

import chdb

from storage.errors import StorageError

# ClickHouse error codes this module answers with itself (src/Common/ErrorCodes.cpp).
BAD_ARGUMENTS, SYNTAX_ERROR, UNKNOWN_SETTING, TIMEOUT_EXCEEDED = 36, 62, 115, 159
READONLY, TOO_MANY_SIMULTANEOUS_QUERIES, SETTING_CONSTRAINT_VIOLATION = 164, 202, 452
ACCESS_DENIED, AUTHENTICATION_FAILED, REQUIRED_PASSWORD = 497, 516, 194
CODE_NAMES = {
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    UNKNOWN_SETTING: "UNKNOWN_SETTING",
    TIMEOUT_EXCEEDED: "TIMEOUT_EXCEEDED",
    READONLY: "READONLY",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    SETTING_CONSTRAINT_VIOLATION: "SETTING_CONSTRAINT_VIOLATION",
    ACCESS_DENIED: "ACCESS_DENIED",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    REQUIRED_PASSWORD: "REQUIRED_PASSWORD",
}
VERSION = str(getattr(chdb, "engine_version", ""))
ENGINE_ERROR = re.compile(r"Code: (\d+)\. (DB::Exception: .*)", re.DOTALL)

# Statement kinds that only read (the first word of EXPLAIN AST's root line).
READ_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "ShowTables", "Describe", "ShowCreate", "Exists")
EXPLAIN_ROOT = "Explain"
# Roots whose last `Identifier` child is the FORMAT clause (SHOW CREATE's and EXISTS' is the table).
FORMAT_ROOTS = ("Select", "ShowTables", "Describe")
# Table functions that read nothing outside the engine's own tables and the query's text.
TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "values", "view", "merge", "null", "generaterandom"}
    | {"generate_series", "generateseries", "format"}
)
# Functions anywhere else that reach files, the network or other servers.
DENIED_FUNCTIONS = frozenset(
    {"file", "url", "s3", "s3cluster", "gcs", "oss", "cosn", "hdfs", "hdfscluster", "azureblobstorage", "remote"}
    | {"remotesecure", "cluster", "clusterallreplicas", "mysql", "postgresql", "sqlite", "mongodb", "redis", "jdbc"}
    | {"odbc", "executable", "input", "urlcluster", "filecluster", "iceberg", "deltalake", "hudi", "ytsaurus"}
    | {"arrowflight", "prometheusquery", "prometheusqueryrange", "timeseriesdata", "timeseriesmetrics", "loop"}
)
AST_LINE = re.compile(r"^( *)(\S+)(?: (\S+))?")
SETTINGS_LINE = re.compile(r"^\s*SETTINGS (.+)$", re.MULTILINE)
SETTING_PAIR = re.compile(r"(\w+) = ('(?:[^'\\]|\\.)*'|[^,]+)")
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def refuse_unknown(settings: Mapping[str, str]) -> None:
    """ClickHouse's answer to a setting whose name is not a name: nothing of it reaches a SET."""
    for name in settings:
        if not SETTING_NAME.fullmatch(name):
            raise QueryError(UNKNOWN_SETTING, f"Unknown setting '{name}'")


class QueryError(StorageError):
    """A refusal in ClickHouse's words: its error code, the code's name and the message."""

    def __init__(self, code: int, message: str, name: str | None = None):
        self.code, self.name = code, name or CODE_NAMES.get(code, "UNKNOWN_EXCEPTION")
        self.message = message
        super().__init__(self.text())

    def text(self) -> str:
        tail = f" ({self.name})" if not self.message.rstrip().endswith(f"({self.name})") else ""
        version = f" (version {VERSION})" if VERSION else ""
        return f"Code: {self.code}. DB::Exception: {self.message}{tail}{version}"

    @classmethod
    def from_engine(cls, exc: Exception) -> "QueryError":
        """chdb's exception → QueryError with the engine's own code and message."""
        found = ENGINE_ERROR.search(str(exc))
        if not found:
            return cls(1001, str(exc), "STD_EXCEPTION")
        message = found.group(2).removeprefix("DB::Exception: ").strip()
        message = re.sub(r"^Code: \d+\. DB::Exception: ", "", message)
        message = re.sub(r" \(version [^)]*\)\.?", "", message)
        message = re.sub(r"(\(\w+\))\.? \1$", r"\1", message)
        name = re.search(r"\((\w+)\)\s*$", message)
        return cls(int(found.group(1)), message, name.group(1) if name else None)


@dataclass(frozen=True)
class Limits:
    """What every analyst query runs under; a query may lower these, never raise them."""

    max_execution_time: int = 60
    max_result_bytes: int = 1_000_000_000
    max_result_rows: int = 0
    max_memory_usage: int = 4_000_000_000

    def base_settings(self) -> dict[str, str]:
        limits = {k: str(v) for k, v in vars(self).items() if v}
        return {"readonly": "2", **limits, "result_overflow_mode": "throw", "timeout_overflow_mode": "throw"}

    def refuse_raising(self, settings: Mapping[str, str]) -> None:
        """QueryError (READONLY, SETTING_CONSTRAINT_VIOLATION) for a setting that would loosen them."""
        for name, raw in settings.items():
            value = raw.strip().strip("'")
            if name == "readonly":
                if value != "2":
                    raise QueryError(READONLY, "Cannot modify 'readonly' setting in readonly mode")
            elif name in ("result_overflow_mode", "timeout_overflow_mode") and value != "throw":
                raise QueryError(SETTING_CONSTRAINT_VIOLATION, f"Setting {name} should not be changed")
            elif name in vars(self):
                self._within(name, value)

    def _within(self, name: str, value: str) -> None:
        limit = getattr(self, name)
        try:
            number = float(value)
        except ValueError:
            raise QueryError(BAD_ARGUMENTS, f"Cannot parse {value!r} as a number for setting {name}") from None
        if limit and (number <= 0 or number > limit):
            raise QueryError(
                SETTING_CONSTRAINT_VIOLATION, f"Setting {name} shouldn't be greater than {limit} (nor 0, unlimited)"
            )


@dataclass(frozen=True)
class Checked:
    """A query that passed `check`: the one statement to run and the format it names, if any."""

    sql: str
    format: str | None
    streamable: bool  # chdb streams SELECTs only; SHOW, DESCRIBE, EXPLAIN answer in one piece


def escaped(value: str) -> str:
    """A query parameter's value as ClickHouse reads it (escaped, like TabSeparated)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def quoted(value: str) -> str:
    """A string literal of `value`."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ReaderConnection:
    """One chdb session for analyst queries: `check`, then `stream` within `limits`."""

    written = (0, 0)  # rows, bytes: a reader writes nothing

    def __init__(self, directory: str, limits: Limits):
        self.conn, self.limits = chdb.connect(directory), limits
        self._apply(limits.base_settings())

    def close(self) -> None:
        self.conn.close()

    def use(self, database: str) -> None:
        """The database unqualified names refer to (the HTTP interface's `database` parameter)."""
        self._query("USE `" + database.replace("\\", "\\\\").replace("`", "\\`") + "`")

    def check(self, sql: str, params: Mapping[str, str] | None = None) -> Checked:
        """The query as one read-only statement, or QueryError saying why not."""
        one = self._query("SELECT formatQuery({q:String})", {"q": escaped(sql)}).decode().strip()
        if not one:
            raise QueryError(SYNTAX_ERROR, "Empty query")
        ast = self._query("EXPLAIN AST " + one, dict(params or {})).decode()
        fmt = refuse_unless_read(ast)
        settings = {name: value for line in SETTINGS_LINE.findall(one) for name, value in SETTING_PAIR.findall(line)}
        self.limits.refuse_raising(settings)
        return Checked(one, fmt, ast.startswith("Select"))

    def stream(
        self, checked: Checked, fmt: str, params: Mapping[str, str], settings: Mapping[str, str]
    ) -> Generator[bytes, None, None]:
        """The result in `fmt` (a FORMAT clause wins), chunk by chunk, with `settings` for this query only."""
        refuse_unknown(settings)
        self.limits.refuse_raising(settings)
        settings = {name: value for name, value in settings.items() if name != "readonly"}  # 2 already
        try:
            self._apply(settings)
            if not checked.streamable:
                yield self.conn.query(checked.sql, fmt, params=dict(params) or None).bytes()
                return
            result = self.conn.send_query(checked.sql, fmt, params=dict(params) or None)
            try:
                for chunk in result:
                    yield chunk.bytes()
            finally:
                result.cancel()
        except RuntimeError as exc:
            raise QueryError.from_engine(exc) from None
        finally:
            self._restore(settings)

    def _apply(self, settings: Mapping[str, str]) -> None:
        if settings:
            self._query("SET " + ", ".join(f"{name} = {quoted(value)}" for name, value in settings.items()))

    def _restore(self, settings: Mapping[str, str]) -> None:
        """Back to the base: a SET persists on the connection, and the next query is someone else's."""
        if settings:
            self._query("SET " + ", ".join(f"{name} = DEFAULT" for name in settings if SETTING_NAME.fullmatch(name)))
            self._apply({k: v for k, v in self.limits.base_settings().items() if k != "readonly"})

    def _query(self, sql: str, params: dict | None = None) -> bytes:
        try:
            return self.conn.query(sql, "TabSeparatedRaw", params=params or None).bytes()
        except RuntimeError as exc:
            raise QueryError.from_engine(exc) from None


def refuse_unless_read(ast: str) -> str | None:
    """EXPLAIN AST's tree → the FORMAT it names (or None), or QueryError for anything but a read."""
    lines = [(len(m.group(1)), m.group(2), m.group(3) or "") for m in map(AST_LINE.match, ast.splitlines()) if m]
    if not lines:
        raise QueryError(SYNTAX_ERROR, "Empty query")
    root = lines[0][1]
    if not (root.startswith(READ_ROOTS) or root == EXPLAIN_ROOT):
        raise QueryError(READONLY, f"Cannot execute query in readonly mode: only reading queries are served ({root})")
    fmt = None
    for i, (depth, kind, name) in enumerate(lines):
        if depth == 1 and kind == "Literal":
            raise QueryError(ACCESS_DENIED, "INTO OUTFILE is not allowed: results are returned, not written")
        if depth == 1 and kind == "Identifier" and root.startswith(FORMAT_ROOTS):
            fmt = name
        if kind == "Function":
            _refuse_function(name.lower(), _parent(lines, i) == "TableExpression")
    return fmt


def _parent(lines: list[tuple[int, str, str]], i: int) -> str:
    depth = lines[i][0]
    for j in range(i - 1, -1, -1):
        if lines[j][0] < depth:
            return lines[j][1]
    return ""


def _refuse_function(name: str, table_function: bool) -> None:
    if table_function and name not in TABLE_FUNCTIONS:
        raise QueryError(ACCESS_DENIED, f"Table function {name} is not allowed here: it reads outside the database")
    if name in DENIED_FUNCTIONS:
        raise QueryError(ACCESS_DENIED, f"Function {name} is not allowed here: it reads outside the database")
