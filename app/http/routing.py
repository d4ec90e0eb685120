"""Routes as data: each declares its method, path, handler and required scope.

`endpoint()` wraps a handler with authentication and the scope check, so no route can
forget them; `fallback()` answers unmatched requests with the 404 or 405 envelope.
"""

import math
import re
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from app.access.auth import Principal, check_workspace_header, require_scope
from app.http.errors import MethodNotAllowed, RateLimited, ResourceNotFound
from app.http.idempotency import IDEMPOTENCY_KEY, UNSAFE_METHODS, run_idempotently
from app.http.presenters import iso
from app.access.rate_limits import rate_limit_headers
from app.http.validation import parse_id


@dataclass
class Services:
    """What handlers need; filled in by the lifespan in app/main.py."""

    settings: object
    pool: object = None
    redis: object = None
    authenticator: object = None
    producer: object = None  # ingest.handoff.producer.DurableProducer
    topics: object = None  # ingest.events.Topics
    mcp: object = None  # app.mcp_servers.registry.Registry
    idempotency: object = None  # storage.redis.idempotency.IdempotencyStore
    entitlements: object = None  # app.resources.entitlements.Ledger
    pixel: object = None  # app.pixel.track.Pixel
    workspaces: object = None  # storage.postgres.workspace_cache.WorkspaceCache


@dataclass(frozen=True, slots=True)
class Call:
    request: object
    principal: Principal | None
    services: Services

    @property
    def settings(self):
        return self.services.settings

    @property
    def pool(self):
        return self.services.pool


Handler = Callable[[Call], Awaitable[object]]


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


def endpoint(route: Route, services: Services):
    handler, scope = route.handler, route.scope
    if scope is None:
        async def public(request):
            return await handler(Call(request, None, services))

        return public

    async def guarded(request):
        principal, decision, shared = await services.authenticator.admit(request)
        request.extra_headers = rate_limit_headers(decision, principal.tier)
        if not shared:
            request.extra_headers.append((b"X-RateLimit-Mode", b"local"))
        if not decision.allowed:
            raise rate_limited(decision)
        require_scope(principal, scope)
        check_workspace_header(request, principal)
        call = Call(request, principal, services)
        if request.method in UNSAFE_METHODS and request.get_first_header(IDEMPOTENCY_KEY) is not None:
            return await run_idempotently(call, handler)
        return await handler(call)

    return guarded


def rate_limited(decision) -> RateLimited:
    retry_after = max(1, math.ceil(decision.retry_after))
    reset_at = datetime.fromtimestamp(time.time() + decision.reset_after, timezone.utc)
    return RateLimited(retry_after, decision.limit, iso(reset_at))


def path_pattern(path: str) -> re.Pattern:
    # BlackSheep's `{path:name}` spans slashes; any other parameter is one segment.
    pattern = re.sub(r"\{path:[^}]+\}", ".+", path)
    return re.compile("^" + re.sub(r"\{[^}:]+\}", "[^/]+", pattern) + "$")


def fallback(routes: list[Route]):
    """404 for unknown paths, 405 (with Allow) for a known path and another method."""
    patterns = [(path_pattern(r.path), r.method) for r in routes]

    async def not_matched(request):
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
