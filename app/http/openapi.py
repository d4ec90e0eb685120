"""HTTP: /openapi.json (OpenAPI 3.1, built from the route table) and /docs (a plain page)."""

import html
from typing import Any

import orjson
from blacksheep import Content, Response

from app.http.routing import PublicCall, Route
from app.resources import webhooks

ERROR_DESCRIPTIONS = {
    400: "Malformed JSON or wrong content type",
    401: "Missing or invalid API key (`unauthorized`)",
    403: "Missing scope or foreign workspace (`access_denied`)",
    404: "Not found (`not_found`)",
    409: "Conflict with the current state (`conflict`)",
    413: "Body over the size limit (`payload_too_large`)",
    429: "Over the key's rate limit (`rate_limit_exceeded`, `Retry-After`)",
    422: "Invalid input (`validation_failed`, per-field `errors`)",
    502: "An upstream (MCP) server failed or is unreachable (`bad_gateway`)",
    503: "A dependency is unavailable",
    504: "An upstream (MCP) call passed its deadline (`gateway_timeout`)",
}
# Path parameters are numeric ids except under these prefixes (MCP server ids, resource URIs).
STRING_PARAMETER_PATHS = ("/api/v1/mcp/",)
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "request_id": {"type": "string"},
    },
}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "tags": [route.tag], "operationId": route.handler.__name__}
    kind = "string" if route.path.startswith(STRING_PARAMETER_PATHS) else "integer"
    params = [
        {"name": _parameter_name(n), "in": "path", "required": True, "schema": {"type": kind}}
        for n in _path_names(route.path)
    ]
    params += [{"name": q, "in": "query", "schema": {"type": "string"}} for q in route.query]
    mutating = route.scope and route.method in ("POST", "PUT", "PATCH", "DELETE")
    if mutating:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Run once; repeats within the TTL replay the answer (see README)",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": route.method != "POST" or "required" in route.body,
            "content": {"application/json": {"schema": route.body}},
        }
    responses: dict[str, dict[str, Any]] = {str(route.status): {"description": "Success"}}
    codes = set(route.errors) | ({401, 403, 429} if route.scope else set())
    if mutating:
        codes |= {409, 422, 503}
    if route.body is not None:
        codes |= {400, 413, 422}
    for code in sorted(codes):
        responses[str(code)] = {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
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


def build_document(routes: list[Route]) -> dict:
    paths: dict = {}
    for route in routes:
        paths.setdefault(_document_path(route.path), {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice API", "version": "1.0.0"},
        "servers": [{"url": "/"}],
        "paths": paths,
        "webhooks": webhooks.openapi_webhooks(),  # the domain events Sluice POSTs to endpoints
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "sk_live_… API key"}},
            "schemas": {"Error": ERROR_SCHEMA},
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
