"""HTTP: /openapi.json (OpenAPI 3.1, built from the route table) and /docs (a plain page)."""

import html
from typing import Any

import orjson
from blacksheep import Content, Response

from app.http.idempotency import KEY_SCHEMA
from app.http.listing import listing_parameters
from app.http.routing import PublicCall, Route
from app.http.shapes import NAMED
from app.http.validation import ID_MAX
from app.resources import webhooks

ERROR_DESCRIPTIONS = {
    400: "Malformed JSON, wrong content type, or a request the resource's state refuses",
    401: "Missing or invalid API key (`unauthorized`)",
    403: "Missing scope, foreign workspace or a limit of the plan (`access_denied`, `feature_limit_reached`)",
    404: "Not found (`not_found`)",
    405: "Method not allowed on this path (`method_not_allowed`); `Allow` lists those that are",
    408: "The request body did not arrive in time (`request_timeout`)",
    409: "Conflict with the current state (`conflict`), or an Idempotency-Key reused for another request "
    "(`idempotency_key_reused`) or still running (`conflict`, `Retry-After`)",
    413: "Body over the size limit (`payload_too_large`)",
    422: "Invalid input (`validation_failed`, per-field `errors`)",
    429: "Over the rate limit (`rate_limit_exceeded`); `Retry-After` says when to retry",
    502: "An upstream (MCP) server failed or is unreachable (`bad_gateway`)",
    503: "A dependency is unavailable (`service_unavailable`); `Retry-After` says when to retry",
    504: "An upstream call (an MCP server, a ClickHouse query) passed its deadline (`gateway_timeout`)",
}
# What the HTTP server (granian) answers before the API sees a request, with no body.
SERVER_REFUSALS = {
    414: "The URL is longer than the HTTP server reads (about 64 KB); no body",
    431: "The request's header fields are larger than the HTTP server reads; no body",
}
# Path parameters are numeric ids except under these prefixes (MCP server ids, resource URIs).
STRING_PARAMETER_PATHS = ("/api/v1/mcp/",)
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. validation_failed"},
        "message": {"type": "string", "description": "What went wrong, for a person"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "validation_failed: field or parameter name → its messages",
        },
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,  # some codes add fields: retry_after, feature, host, results, …
}
INTEGER_HEADER = {"schema": {"type": "integer", "minimum": 0}}
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "This request's id (the client's own if it sent a valid one)",
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {
        "description": "Capacity of the rate-limit bucket that applied: the tier's requests per minute plus its burst",
        **INTEGER_HEADER,
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the bucket now; never above X-RateLimit-Limit",
        **INTEGER_HEADER,
    },
    "X-RateLimit-Reset": {"description": "Unix time at which the bucket is full again", **INTEGER_HEADER},
    "RateLimit-Policy": {
        "description": "IETF draft: the bucket's quota q over w seconds",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": "IETF draft: r requests remain, full again in t seconds",
        "schema": {"type": "string"},
    },
    "Retry-After": {"description": "Seconds to wait before retrying", **INTEGER_HEADER},
    "Allow": {"description": "The methods this path answers", "schema": {"type": "string"}},
    "X-RateLimit-Mode": {
        "description": "local: Redis was unreachable and this process's own limiter (its share of the bucket) decided",
        "schema": {"type": "string", "enum": ["local"]},
    },
    "WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "true: this is the stored answer to an earlier request with the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Policy",
    "RateLimit",
)
ERROR_HEADERS = {401: ("WWW-Authenticate",), 405: ("Allow",), 429: ("Retry-After",), 503: ("Retry-After",)}


def _headers(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _query_parameters(route: Route) -> list[dict[str, Any]]:
    if route.listing is not None:
        return listing_parameters(route.listing)
    return route.query.parameters() if route.query is not None else []


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "tags": [route.tag], "operationId": route.handler.__name__}
    kind: dict[str, Any] = (
        {"type": "string", "minLength": 1}
        if route.path.startswith(STRING_PARAMETER_PATHS)
        else {"type": "integer", "minimum": 1, "maximum": ID_MAX}
    )
    params = [
        {"name": _parameter_name(n), "in": "path", "required": True, "schema": kind} for n in _path_names(route.path)
    ]
    params += _query_parameters(route)
    mutating = route.scope and route.method in ("POST", "PUT", "PATCH", "DELETE")
    idempotent = mutating or (route.method == "POST" and route.body is not None)
    if idempotent:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Run once; a repeat within 24 hours replays the first answer (see README)",
                "schema": KEY_SCHEMA,
            }
        )
    if route.scope:
        params.append(
            {
                "name": "X-Workspace-ID",
                "in": "header",
                "required": False,
                "description": "The key's own workspace id; any other is refused with 403",
                "schema": {"type": "integer", "minimum": 1, "maximum": ID_MAX},
            }
        )
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": route.body.documented()}},
        }
    success_headers = ("X-Request-ID", *RATE_LIMIT_HEADERS, *(("Idempotent-Replayed",) if idempotent else ()))
    success: dict[str, Any] = {"description": "Success", "headers": _headers(success_headers)}
    if route.answer is not None:
        success["content"] = {"application/json": {"schema": route.answer}}
    if route.csv:
        success.setdefault("content", {})["text/csv"] = {"schema": {"type": "string"}}
    responses: dict[str, dict[str, Any]] = {str(status): success for status in (route.status, *route.also)}
    codes = set(route.errors) | {405}
    if route.scope:
        codes |= {401, 403, 422, 429, 503}  # 422: an X-Workspace-ID that is not an id
    if idempotent:
        codes |= {409, 422, 503}
    if route.body is not None:
        codes |= {400, 408, 413, 422}
    if route.query is not None or route.listing is not None:
        codes |= {422}
    for code in sorted(codes):
        responses[str(code)] = {
            "description": ERROR_DESCRIPTIONS[code],
            "headers": _headers(("X-Request-ID", *RATE_LIMIT_HEADERS, *ERROR_HEADERS.get(code, ()))),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    for code, description in SERVER_REFUSALS.items():
        responses[str(code)] = {"description": description}
    op["responses"] = responses
    if route.scope:
        op["security"] = [{"apiKey": []}]
        op["x-required-scope"] = route.scope
        op["description"] = f"Required scope: `{route.scope}`"
    return op


def _path_names(path: str) -> list[str]:
    return [part for part in path.split("/") if part.startswith("{")]


def _parameter_name(part: str) -> str:
    """`{id}` → id; BlackSheep's typed `{path:uri}` → uri."""
    return part[1:-1].rpartition(":")[2]


def _document_path(path: str) -> str:
    return "/".join("{" + _parameter_name(p) + "}" if p.startswith("{") else p for p in path.split("/"))


def _links(route: Route, routes: list[Route]) -> dict[str, Any]:
    """OpenAPI links from a create (201 with `data.id`) to what acts on the row it made, so a
    client or a stateful fuzzer can follow create → read → update → delete."""
    if route.method != "POST" or route.status != 201 or route.answer is None:
        return {}
    prefix = route.path + "/{id}"
    return {
        target.handler.__name__: {
            "operationId": target.handler.__name__,
            "parameters": {"id": "$response.body#/data/id"},
        }
        for target in routes
        if target.path == prefix or target.path.startswith(prefix + "/")
    }


def build_document(routes: list[Route]) -> dict:
    paths: dict = {}
    seen: dict[str, int] = {}
    for route in routes:
        operation = _operation(route)
        name = operation["operationId"]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # one handler on two paths (the script's alias): operationIds are unique
            operation["operationId"] = f"{name}_{seen[name]}"
        links = _links(route, routes)
        if links:
            operation["responses"][str(route.status)]["links"] = links
        paths.setdefault(_document_path(route.path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice API", "version": "1.0.0"},
        "servers": [{"url": "/"}],
        "paths": paths,
        "webhooks": webhooks.openapi_webhooks(),  # the domain events Sluice POSTs to endpoints
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "sk_live_… API key"}},
            "schemas": {"Error": ERROR_SCHEMA, **NAMED},
            "headers": HEADERS,
        },
    }


def docs_page(routes: list[Route]) -> bytes:
    rows = "".join(
        f"<tr><td>{r.method}</td><td><code>{html.escape(r.path)}</code></td>"
        f"<td>{html.escape(r.scope or 'public')}</td><td>{html.escape(r.summary)}</td></tr>"
        for r in routes
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Sluice API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em 1em}</style>"
        "<h1>Sluice API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a> (OpenAPI 3.1).</p>"
        f"<table><tr><th>Method</th><th>Path</th><th>Scope</th><th>What</th></tr>{rows}</table>"
    ).encode()


def routes_for(api_routes: list[Route]) -> list[Route]:
    """The two documentation routes, documenting every route including themselves."""

    async def openapi_json(call: PublicCall) -> Response:
        return Response(200, None, Content(b"application/json", document))

    async def docs(call: PublicCall) -> Response:
        return Response(200, None, Content(b"text/html; charset=utf-8", page))

    own = [
        Route("GET", "/openapi.json", openapi_json, None, "This OpenAPI document", "Docs"),
        Route("GET", "/docs", docs, None, "Human-readable list of endpoints", "Docs"),
    ]
    document = orjson.dumps(build_document(api_routes + own))
    page = docs_page(api_routes + own)
    return own
