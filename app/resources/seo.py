"""HTTP: /api/v1/seo — submit a report, list issues, read a report, a URL's score history."""

from datetime import datetime

from blacksheep import Response

from app.http.bodies import read_json_object
from app.http.errors import AccessDenied, ValidationFailed, json_response
from app.http.listing import page_body, parse_list_query
from app.http.presenters import iso
from app.http.routing import Call, Route, path_id
from app.http.validation import Checker, Missing, json_size, parse_id, parse_int, present, required, unstorable_key
from storage.postgres import outbox, seo_reports
from storage.postgres.seo_reports import MAX_HISTORY, SCORES

SEVERITIES = ("critical", "error", "warning", "info")
# Browsers and sitemaps (50,000-URL files) both work with URLs up to about 2 KB.
URL_MAX = 2048
# A Lighthouse run reports a few dozen audits; 1,000 issues leaves room for a whole-page crawl.
MAX_ISSUES = 1000
ISSUE_TYPE_MAX = 100
ELEMENT_MAX = 1000
# Each issue's extra keys are kept as `details`; the bound stops one report filling the table.
DETAILS_MAX_BYTES = 8192
HISTORY_DEFAULT = 100


def check_url(checker: Checker, name: str = "url") -> str | Missing:
    url, _parts = checker.url(name, ("http", "https"), required=True, max_len=URL_MAX)
    return url


def check_scores(checker: Checker) -> dict[str, int]:
    scores = checker.object("scores", required=True)
    if not present(scores):
        return {}
    for name in scores:
        if name not in SCORES:
            checker.fail(f"scores.{name}", f"Unknown score; allowed: {', '.join(SCORES)}.")
    inner = Checker(scores)
    values = {name: inner.integer(name, minimum=0, maximum=100, required=True) for name in SCORES}
    for name, messages in inner.errors.items():
        for message in messages:
            checker.fail(f"scores.{name}", message.replace(f"The {name} ", f"The scores.{name} "))
    # A score missing or refused is an error on the checker: done() raises before these are used.
    return {name: value for name, value in values.items() if present(value)}


def check_issue(checker: Checker, index: int, issue) -> dict | None:
    prefix = f"issues.{index}"
    if not isinstance(issue, dict):
        checker.fail(prefix, f"The {prefix} must be an object.")
        return None
    inner = Checker(issue)
    issue_type = inner.string("type", required=True, max_len=ISSUE_TYPE_MAX)
    severity = inner.choice("severity", SEVERITIES, required=True)
    inner.string("element", max_len=ELEMENT_MAX)
    details = {k: v for k, v in issue.items() if k not in ("type", "severity")}
    size = json_size(details)
    if size is None or size > DETAILS_MAX_BYTES:
        inner.fail("details", f"The issue's other fields may not exceed {DETAILS_MAX_BYTES} bytes of JSON.")
    elif (bad := unstorable_key(details)) is not None and bad not in inner.errors:  # details is jsonb
        inner.fail(bad, f"The {bad} may not contain NUL characters.")
    for name, messages in inner.errors.items():
        checker.errors.setdefault(f"{prefix}.{name}", []).extend(messages)
    if inner.errors:
        return None
    return {"issue_type": issue_type, "severity": severity, "details": details}


def check_issues(checker: Checker) -> list[dict]:
    if "issues" not in checker.data:
        return []
    issues = checker.data["issues"]
    if not isinstance(issues, list):
        checker.fail("issues", "The issues must be an array of objects.")
        return []
    if len(issues) > MAX_ISSUES:
        checker.fail("issues", f"The issues may not have more than {MAX_ISSUES} items.")
        return []
    checked = [check_issue(checker, n, issue) for n, issue in enumerate(issues)]
    return [issue for issue in checked if issue is not None]  # None: its errors are on the checker


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
    data = await read_json_object(call.request, call.settings.max_body_bytes)
    checker = Checker(data, allowed=("url", "scores", "issues"))
    url, scores, issues = check_url(checker), check_scores(checker), check_issues(checker)
    checker.done()
    # seo.report.created commits with the report (transactional outbox, storage/postgres/outbox.py).
    row = await seo_reports.create_report(
        call.pool, call.principal.workspace_id, required(url), scores, issues, on_created=outbox.emit_seo_report_created
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
    severity = query.filters.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise ValidationFailed({"severity": [f"The severity must be one of: {', '.join(SEVERITIES)}."]})
    report_id = query.filters.get("report_id")
    if report_id is not None:
        query.filters["report_id"] = str(report_id_filter(report_id))  # compared as text: 007 is 7
    rows, total = await seo_reports.list_issues(call.pool, workspace_id, query)
    items = [issue_view(row) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


def report_id_filter(raw: str) -> int:
    try:
        return parse_id(raw)
    except ValueError:
        raise ValidationFailed({"report_id": ["The report_id must be a report id."]}) from None


async def list_seo_reports(call: Call) -> Response:
    query = parse_list_query(call.request, seo_reports.REPORT_LISTING)
    rows, total = await seo_reports.list_reports(call.pool, call.principal.workspace_id, query)
    items = [report_view(row, with_issues=False) for row in rows]
    return json_response(200, page_body(call.request, call.settings.public_url, query, items, total))


async def get_seo_report(call: Call) -> Response:
    row = await seo_reports.get_report(call.pool, call.principal.workspace_id, path_id(call))
    return json_response(200, {"data": report_view(row)})


def history_query(call: Call) -> tuple[str, datetime | None, datetime | None, int]:
    query = {k: v[0] for k, v in call.request.query.items() if v}
    checker = Checker(query, allowed=("url", "since", "before", "limit"))
    url = check_url(checker)
    since, before = checker.timestamp("since"), checker.timestamp("before")
    limit, raw = HISTORY_DEFAULT, query.get("limit")
    try:
        limit = limit if raw is None else parse_int(raw, 1, MAX_HISTORY)
    except ValueError:
        checker.fail("limit", f"The limit must be an integer between 1 and {MAX_HISTORY}.")
    checker.done()
    return required(url), since if present(since) else None, before if present(before) else None, limit


async def get_seo_history(call: Call) -> Response:
    url, since, before, limit = history_query(call)
    rows = await seo_reports.score_history(call.pool, call.principal.workspace_id, url, since, before, limit)
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


ISSUE_SCHEMA = {
    "type": "object",
    "required": ["type", "severity"],
    "properties": {
        "type": {"type": "string", "maxLength": ISSUE_TYPE_MAX},
        "severity": {"type": "string", "enum": list(SEVERITIES)},
        "element": {"type": "string", "maxLength": ELEMENT_MAX},
    },
    "additionalProperties": True,
}
REPORT_BODY = {
    "type": "object",
    "required": ["url", "scores"],
    "properties": {
        "url": {"type": "string", "format": "uri", "maxLength": URL_MAX},
        "scores": {
            "type": "object",
            "required": list(SCORES),
            "additionalProperties": False,
            "properties": {name: {"type": "integer", "minimum": 0, "maximum": 100} for name in SCORES},
        },
        "issues": {"type": "array", "maxItems": MAX_ISSUES, "items": ISSUE_SCHEMA},
    },
}
ISSUE_QUERY = (
    "page",
    "per_page",
    "sort",
    "fields",
    "search",
    "severity",
    "issue_type",
    "url",
    "report_id",
    "created_after",
    "created_before",
)
REPORT_QUERY = ("page", "per_page", "sort", "fields", "search", "url", "created_after", "created_before")
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
        errors=(422,),
    ),
    Route(
        "GET",
        BASE + "/issues/{workspace_id}",
        list_seo_issues,
        "seo:read",
        "List the workspace's SEO issues (filters: severity, issue_type, url, report_id, dates)",
        "SEO",
        query=ISSUE_QUERY,
        errors=(404, 422),
    ),
    Route(
        "GET",
        BASE + "/reports",
        list_seo_reports,
        "seo:read",
        "List SEO reports (scores, no issues)",
        "SEO",
        query=REPORT_QUERY,
        errors=(422,),
    ),
    Route(
        "GET",
        BASE + "/reports/{id}",
        get_seo_report,
        "seo:read",
        "Get an SEO report with its issues",
        "SEO",
        errors=(404,),
    ),
    Route(
        "GET",
        BASE + "/history",
        get_seo_history,
        "seo:read",
        "Score history of one URL, newest first",
        "SEO",
        query=("url", "since", "before", "limit"),
        errors=(422,),
    ),
]
