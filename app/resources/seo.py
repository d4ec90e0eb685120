"""HTTP: /api/v1/seo — submit a report, list issues, read a report, a URL's score history.

The report body and the history query are shapes (app/http/shapes.py): one declaration both
validates them and documents them."""

from typing import Any

from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, json_response
from app.http.listing import page_answer, page_body, parse_list_query
from app.http.presenters import iso
from app.http.routing import Call, Route, path_id
from app.http.shapes import (
    NO_NUL,
    Choice,
    DateTime,
    Errors,
    Field,
    Free,
    Integer,
    List,
    Object,
    Query,
    Text,
    Url,
    anchored,
    fail,
    response,
)
from app.http.validation import ID_MAX, MISSING, Missing, parse_id
from storage.postgres import outbox, seo_reports
from storage.postgres.seo_reports import MAX_HISTORY, SCORES

SEVERITIES = ("critical", "error", "warning", "info")
# Browsers and sitemaps (50,000-URL files) both work with URLs up to about 2 KB.
URL_MAX = 2048
# A Lighthouse run reports a few dozen audits; 1,000 issues leaves room for a whole-page crawl.
MAX_ISSUES = 1000
ISSUE_TYPE_MAX = 100
ELEMENT_MAX = 1000
# An issue's fields besides type and severity are kept as its `details` (jsonb): plain values
# only, so that what the schema admits is what Postgres stores and one issue stays small.
MAX_ISSUE_FIELDS = 20
DETAIL_NAME_MAX = 100
DETAIL_TEXT_MAX = 1000
HISTORY_DEFAULT = 100
COUNT_MAX = 2**31 - 1  # seo_reports.issue_count is an integer


class Issue(Field):
    """One issue: its type and severity, and up to MAX_ISSUE_FIELDS fields in all; each other
    field (element among them) is kept in `details` and holds text, a number, a boolean or null."""

    KNOWN = Object(
        {
            "type": Text(ISSUE_TYPE_MAX),
            "severity": Choice(SEVERITIES),
            "element": Text(ELEMENT_MAX, description="The element at fault, e.g. a CSS selector"),
        },
        required=("type", "severity"),
    )
    DETAIL = {
        "anyOf": [
            {"type": "string", "maxLength": DETAIL_TEXT_MAX, "pattern": anchored(NO_NUL)},
            {"type": ["number", "boolean", "null"]},
        ]
    }

    def schema(self) -> dict[str, Any]:
        return {
            **self.KNOWN.schema(),
            "additionalProperties": self.DETAIL,
            "maxProperties": MAX_ISSUE_FIELDS,
            "propertyNames": {"maxLength": DETAIL_NAME_MAX, "pattern": anchored(NO_NUL)},
        }

    def read(self, value: Any, name: str, errors: Errors) -> dict | Missing:
        if not isinstance(value, dict):
            return fail(errors, name, f"The {name} must be an object.")
        if len(value) > MAX_ISSUE_FIELDS:
            return fail(errors, name, f"The {name} may not have more than {MAX_ISSUE_FIELDS} fields.")
        mine: Errors = {}
        known = self.KNOWN.read({k: v for k, v in value.items() if k in self.KNOWN.fields}, name, mine)
        details = {k: v for k, v in value.items() if k not in ("type", "severity")}
        for key, item in details.items():
            if len(key) > DETAIL_NAME_MAX or "\x00" in key:
                fail(mine, name, f"Field names may be at most {DETAIL_NAME_MAX} characters, without NUL.")
            elif key not in self.KNOWN.fields and not plain(item):
                fail(
                    mine,
                    f"{name}.{key}",
                    f"The {name}.{key} must be text of at most {DETAIL_TEXT_MAX} characters without NUL, "
                    "a number, true, false or null.",
                )
        for key, messages in mine.items():
            errors.setdefault(key, []).extend(messages)
        if mine or known is MISSING:
            return MISSING
        return {"issue_type": known["type"], "severity": known["severity"], "details": details}


def plain(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= DETAIL_TEXT_MAX and "\x00" not in value
    return value is None or isinstance(value, bool | int | float)


class Issues(Field):
    """The report's issues, each named by its index in errors (issues.0.type)."""

    item = Issue()

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "maxItems": MAX_ISSUES, "items": self.item.schema()}

    def read(self, value: Any, name: str, errors: Errors) -> list | Missing:
        if not isinstance(value, list):
            return fail(errors, name, f"The {name} must be an array of objects.")
        if len(value) > MAX_ISSUES:
            return fail(errors, name, f"The {name} may not have more than {MAX_ISSUES} items.")
        issues = [self.item.read(issue, f"{name}.{n}", errors) for n, issue in enumerate(value)]
        return MISSING if MISSING in issues else issues


URL = Url(("http", "https"), URL_MAX, example="https://example.com/page")
SCORE_FIELDS = {name: Integer(0, 100) for name in SCORES}
REPORT_BODY = Object(
    {"url": URL, "scores": Object(SCORE_FIELDS, required=SCORES), "issues": Issues()},
    required=("url", "scores"),
)
HISTORY_QUERY = Query(
    {
        "url": URL,
        "since": DateTime(description="Only reports created at or after this"),
        "before": DateTime(description="Only reports created before this"),
        "limit": Integer(1, MAX_HISTORY, description=f"At most this many reports; default {HISTORY_DEFAULT}"),
    },
    required=("url",),
)

# Answers.
TEXT = Free("string")
ID = Integer(1, ID_MAX)
COUNT = Integer(0, COUNT_MAX)
WHEN = DateTime()
SCORES_ANSWER = Object(SCORE_FIELDS, required=SCORES)
ISSUE = {
    "id": ID,
    "report_id": ID,
    "url": TEXT,
    "issue_type": TEXT,
    "severity": Choice(SEVERITIES),
    "details": Free(),
    "created_at": WHEN,
}
REPORT = {
    "id": ID,
    "workspace_id": ID,
    "url": TEXT,
    "scores": SCORES_ANSWER,
    "issue_count": COUNT,
    "created_at": WHEN,
}
REPORT_ANSWER = Object(
    {**REPORT, "issues": List(Object(ISSUE, required=tuple(ISSUE)), MAX_ISSUES, min_items=0)},
    required=(*REPORT, "issues"),
)
POINT = Object(
    {"report_id": ID, "scores": SCORES_ANSWER, "issue_count": COUNT, "created_at": WHEN},
    required=("report_id", "scores", "issue_count", "created_at"),
)
HISTORY_ANSWER = response({"data": Object({"url": TEXT, "history": List(POINT, MAX_HISTORY, 0)}, ("url", "history"))})


def scores_view(row: dict) -> dict:
    return {name: row[name] for name in SCORES}


def issue_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "report_id": row["report_id"],
        "url": row["url"],
        "issue_type": row["issue_type"],
        "severity": row["severity"],
        "details": row["details"],
        "created_at": iso(row["created_at"]),
    }


def report_view(row: dict, with_issues: bool = True) -> dict:
    view = {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "url": row["url"],
        "scores": scores_view(row),
        "issue_count": row["issue_count"],
        "created_at": iso(row["created_at"]),
    }
    if with_issues:
        view["issues"] = [issue_view(i) for i in row["issues"]]
    return view


async def submit_seo_report(call: Call) -> Response:
    report = REPORT_BODY.parse(await read_json_object(call.request, call.settings.max_body_bytes))
    # seo.report.created commits with the report (transactional outbox, storage/postgres/outbox.py).
    row = await seo_reports.create_report(
        call.pool,
        call.principal.workspace_id,
        report["url"],
        report["scores"],
        report.get("issues", []),
        on_created=outbox.emit_seo_report_created,
    )
    return json_response(201, {"message": "SEO report stored.", "data": report_view(row)})


def own_workspace(call: Call) -> int:
    workspace_id = path_id(call, "workspace_id")
    if workspace_id != call.principal.workspace_id:
        raise AccessDenied(f"This API key cannot act on workspace {workspace_id}.")
    return workspace_id


async def list_seo_issues(call: Call) -> Response:
    workspace_id = own_workspace(call)
    query = parse_list_query(call.request, seo_reports.ISSUE_LISTING)
    report_id = query.filters.get("report_id")
    if report_id is not None:
        query.filters["report_id"] = same_id(report_id)
    rows, total = await seo_reports.list_issues(call.pool, workspace_id, query)
    items = [issue_view(row) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


def same_id(raw: str) -> str:
    """report_id is compared as text: 007 names report 7; text that names no id matches nothing,
    as an unknown severity does."""
    try:
        return str(parse_id(raw))
    except ValueError:
        return raw


async def list_seo_reports(call: Call) -> Response:
    query = parse_list_query(call.request, seo_reports.REPORT_LISTING)
    rows, total = await seo_reports.list_reports(call.pool, call.principal.workspace_id, query)
    items = [report_view(row, with_issues=False) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_seo_report(call: Call) -> Response:
    row = await seo_reports.get_report(call.pool, call.principal.workspace_id, path_id(call))
    return json_response(200, {"data": report_view(row)})


async def get_seo_history(call: Call) -> Response:
    query = HISTORY_QUERY.parse(call.request)
    url, limit = query["url"], query.get("limit", HISTORY_DEFAULT)
    rows = await seo_reports.score_history(
        call.pool, call.principal.workspace_id, url, query.get("since"), query.get("before"), limit
    )
    points = [
        {
            "report_id": r["id"],
            "scores": scores_view(r),
            "issue_count": r["issue_count"],
            "created_at": iso(r["created_at"]),
        }
        for r in rows
    ]
    return json_response(200, {"data": {"url": url, "history": points}})


BASE = "/api/v1/seo"
ROUTES = [
    Route(
        "POST",
        BASE + "/report",
        submit_seo_report,
        "seo:write",
        "Submit an SEO report for a URL",
        "SEO",
        status=201,
        body=REPORT_BODY,
        answer=response({"message": TEXT, "data": REPORT_ANSWER}),
    ),
    Route(
        "GET",
        BASE + "/issues/{workspace_id}",
        list_seo_issues,
        "seo:read",
        "List the workspace's SEO issues (filters: severity, issue_type, url, report_id, dates); "
        "403 for another workspace's id",
        "SEO",
        listing=seo_reports.ISSUE_LISTING,
        answer=page_answer(response(ISSUE, required=())),
        errors=(404,),
    ),
    Route(
        "GET",
        BASE + "/reports",
        list_seo_reports,
        "seo:read",
        "List SEO reports (scores, no issues)",
        "SEO",
        listing=seo_reports.REPORT_LISTING,
        answer=page_answer(response(REPORT, required=())),
    ),
    Route(
        "GET",
        BASE + "/reports/{id}",
        get_seo_report,
        "seo:read",
        "Get an SEO report with its issues",
        "SEO",
        answer=response({"data": REPORT_ANSWER}),
        errors=(404,),
    ),
    Route(
        "GET",
        BASE + "/history",
        get_seo_history,
        "seo:read",
        "Score history of one URL, newest first",
        "SEO",
        query=HISTORY_QUERY,
        answer=HISTORY_ANSWER,
    ),
]
