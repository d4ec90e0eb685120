"""Routes as data: each declares its method, path, handler and required scope.

`endpoint()` wraps a handler with authentication and the scope check, so no route can
forget them; `fallback()` answers unmatched requests with the 404 or 405 envelope. A handler
gets a `Call`: the request, its caller, this process's `Services`, and the request's context
(app/http/middleware.py: its id, and the headers its response gets however it ends).
"""

import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from blacksheep import Request, Response
from redis.asyncio import Redis

from app.access.auth import Authenticator, Principal, check_workspace_header, require_scope
from app.access.rate_limits import LimitMode, rate_limit_headers
from app.http.errors import MethodNotAllowed, RateLimited, ResourceNotFound
from app.http.idempotency import IDEMPOTENCY_KEY, UNSAFE_METHODS, run_idempotently
from app.http.middleware import RequestContext
from app.http.presenters import iso
from app.http.validation import parse_id
from app.mcp_servers.registry import Registry
from app.pixel.intake import Pixel
from app.resources.ledger import Ledger
from ingest.events import Topics
from ingest.handoff.sink import Sink
from storage.config import ApiConfig, Config
from storage.postgres.workspace_cache import WorkspaceCache
from storage.redis.idempotency import IdempotencyStore
from storage.redis.rate_limit import Decision


@dataclass
class Services:
    """What handlers need. The lifespan in app/main.py fills in all but `config` and `topics` (None
    until it has); a test of the HTTP layer builds one with only what its routes use."""

    config: Config
    topics: Topics
    pool: asyncpg.Pool | None = None
    redis: Redis | None = None
    authenticator: Authenticator | None = None
    sink: Sink | None = None  # where events go: the DurableProducer, in a test an InMemorySink
    mcp: Registry | None = None
    idempotency: IdempotencyStore | None = None
    entitlements: Ledger | None = None
    pixel: Pixel | None = None
    workspaces: WorkspaceCache | None = None


@dataclass(frozen=True, slots=True)
class Call:
    request: Request
    principal: Principal | None  # None on public routes
    services: Services
    context: RequestContext

    @property
    def settings(self) -> ApiConfig:
        """The API's section of the configuration; others are on `services.config`."""
        return self.services.config.api

    @property
    def pool(self) -> asyncpg.Pool | None:
        return self.services.pool


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    scope: str | None  # None: public, no API key
    summary: str
    tag: str
    status: int = 200
    body: dict | None = None  # JSON schema of the request body, for the OpenAPI document
    query: tuple[str, ...] = ()
    errors: tuple[int, ...] = field(default=())


def endpoint(route: Route, services: Services) -> Callable[[Request], Awaitable[Response]]:
    handler, scope = route.handler, route.scope
    if scope is None:

        async def public(request: Request) -> Response:
            return await handler(Call(request, None, services, request.api_context))

        return public

    async def guarded(request: Request) -> Response:
        context: RequestContext = request.api_context  # set by request_middleware
        principal, decision, mode = await services.authenticator.admit(request)
        context.response_headers += rate_limit_headers(decision, principal.tier)
        if mode is LimitMode.LOCAL:
            context.response_headers.append((b"X-RateLimit-Mode", b"local"))
        if not decision.allowed:
            raise rate_limited(decision)
        require_scope(principal, scope)
        check_workspace_header(request, principal)
        call = Call(request, principal, services, context)
        if request.method in UNSAFE_METHODS and request.get_first_header(IDEMPOTENCY_KEY) is not None:
            return await run_idempotently(call, handler)
        return await handler(call)

    return guarded


def rate_limited(decision: Decision) -> RateLimited:
    retry_after = max(1, math.ceil(decision.retry_after))
    reset_at = datetime.fromtimestamp(time.time() + decision.reset_after, UTC)
    return RateLimited(retry_after, decision.limit, iso(reset_at))


def path_pattern(path: str) -> re.Pattern:
    # BlackSheep's `{path:name}` spans slashes; any other parameter is one segment.
    pattern = re.sub(r"\{path:[^}]+\}", ".+", path)
    return re.compile("^" + re.sub(r"\{[^}:]+\}", "[^/]+", pattern) + "$")


def fallback(routes: list[Route]):
    """404 for unknown paths, 405 (with Allow) for a known path and another method."""
    patterns = [(path_pattern(r.path), r.method) for r in routes]

    async def not_matched(request: Request) -> Response:
        allowed = sorted({method for pattern, method in patterns if pattern.match(request.path)})
        if allowed:
            raise MethodNotAllowed(allowed)
        raise ResourceNotFound()

    return not_matched


def path_id(call: Call, name: str = "id") -> int:
    """A numeric path parameter; anything else cannot name a row, so 404."""
    try:
        return parse_id(call.request.route_values.get(name, ""))
    except ValueError:
        raise ResourceNotFound() from None
