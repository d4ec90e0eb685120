"""Routes as data: each declares its method, path, handler and required scope.

`endpoint()` wraps a handler with authentication and the scope check, so no route can
forget them; `fallback()` answers unmatched requests with the 404 or 405 envelope. A handler
gets a `Call`: the request, this process's `Services`, the request's context (app/http/middleware.py:
its id, and the headers its response gets however it ends) and its caller; a public route's handler
gets the same without a caller, a `PublicCall`.
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import asyncpg
from blacksheep import Request, Response
from redis.asyncio import Redis

from app.access.auth import Authenticator, Principal, check_workspace_header, require_scope
from app.access.rate_limits import rate_limit_headers, rate_limited
from app.http.errors import MethodNotAllowed, ResourceNotFound
from app.http.idempotency import IDEMPOTENCY_KEY, UNSAFE_METHODS, run_idempotently
from app.http.middleware import RequestContext, request_context
from app.http.shapes import Field, Query
from app.http.validation import parse_id
from app.mcp_servers.registry import Registry
from app.pixel.intake import Pixel
from app.resources.ledger import Ledger
from ingest.events import Topics
from ingest.handoff.sink import Sink
from storage.config import ApiConfig, Config
from storage.postgres.listing import ListingSpec
from storage.postgres.workspace_cache import WorkspaceCache
from storage.redis.idempotency import IdempotencyStore


@dataclass(frozen=True, slots=True)
class Services:
    """What handlers need, built whole by the lifespan in app/main.py once every pool and client
    exists; a test of the HTTP layer builds one of its own (tests/unit/app/test_pixel_http.py)."""

    config: Config
    topics: Topics
    pool: asyncpg.Pool
    redis: Redis
    authenticator: Authenticator
    sink: Sink  # where events go: the DurableProducer, in a test an InMemorySink
    mcp: Registry
    idempotency: IdempotencyStore
    entitlements: Ledger
    pixel: Pixel
    workspaces: WorkspaceCache


class ServicesHolder:
    """Where endpoints find this process's Services: routes are added before the lifespan builds
    them, and BlackSheep serves no request before the lifespan has set `services`."""

    __slots__ = ("services",)
    services: Services


@dataclass(frozen=True, slots=True)
class PublicCall:
    """What a public route's handler gets (its Route has no scope): there is no caller."""

    request: Request
    services: Services
    context: RequestContext

    @property
    def settings(self) -> ApiConfig:
        """The API's section of the configuration; others are on `services.config`."""
        return self.services.config.api

    @property
    def pool(self) -> asyncpg.Pool:
        return self.services.pool


@dataclass(frozen=True, slots=True)
class Call(PublicCall):
    """What a guarded route's handler gets: also the caller, admitted and holding the scope."""

    principal: Principal


Handler = Callable[[Call], Awaitable[Response]]
# A public route's handler: it takes the PublicCall every Call is, so it fits Route.handler too.
PublicHandler = Callable[[PublicCall], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    scope: str | None  # None: public, no API key
    summary: str
    tag: str
    status: int = 200
    # The request body's shape (app/http/shapes.py): the handler validates with it, the document shows it.
    body: Field | None = None
    body_required: bool = True
    query: Query | None = None  # the query parameters' shape, likewise
    listing: ListingSpec | None = None  # a list endpoint: its parameters come from the listing spec
    answer: dict | None = None  # JSON Schema of the success answer's body
    also: tuple[int, ...] = ()  # other success statuses with the same answer (the pixel's 207)
    csv: bool = False  # the answer is also served as text/csv (Accept: text/csv)
    errors: tuple[int, ...] = field(default=())


def endpoint(route: Route, holder: ServicesHolder) -> Callable[[Request], Awaitable[Response]]:
    scope = route.scope
    if scope is None:
        # No scope, no caller: such a route's handler is declared on PublicCall (as health's,
        # metrics', openapi's and the pixel's are), the part of Call endpoint() can build here.
        public_handler = cast(PublicHandler, route.handler)

        async def public(request: Request) -> Response:
            return await public_handler(PublicCall(request, holder.services, request_context(request)))

        return public

    handler = route.handler

    async def guarded(request: Request) -> Response:
        services, context = holder.services, request_context(request)
        principal, decision, mode = await services.authenticator.admit(request)
        context.workspace_id = principal.workspace_id  # for the access log line
        context.response_headers += rate_limit_headers(decision, principal.tier, mode)
        if not decision.allowed:
            raise rate_limited(decision)
        require_scope(principal, scope)
        check_workspace_header(request, principal)
        call = Call(request, services, context, principal)
        if request.method in UNSAFE_METHODS and request.get_first_header(IDEMPOTENCY_KEY) is not None:
            return await run_idempotently(call, handler)
        return await handler(call)

    return guarded


def path_pattern(path: str) -> re.Pattern:
    # BlackSheep's `{path:name}` spans slashes; any other parameter is one segment.
    pattern = re.sub(r"\{path:[^}]+\}", ".+", path)
    return re.compile("^" + re.sub(r"\{[^}:]+\}", "[^/]+", pattern) + "$")


def fallback(routes: list[Route], holder: ServicesHolder):
    """404 for unknown paths, 405 (with Allow) for a known path and another method. Either is
    counted and carries rate-limit headers: the key's when the request has a valid one, else the
    address's budget of requests without a valid key (app/access/auth.py Authenticator.meter)."""
    patterns = [(path_pattern(r.path), r.method) for r in routes]

    async def not_matched(request: Request) -> Response:
        context = request_context(request)
        context.response_headers += await holder.services.authenticator.meter(request)
        allowed = sorted({method for pattern, method in patterns if pattern.match(request.path)})
        if allowed:
            raise MethodNotAllowed(allowed)
        raise ResourceNotFound()

    return not_matched


def path_id(call: Call, name: str = "id") -> int:
    """A numeric path parameter; anything else cannot name a row, so 404."""
    try:
        return parse_id(call.request.route_values.get(name) or "")
    except ValueError:
        raise ResourceNotFound() from None
