"""What every request passes, and one layer below it, the ASGI wrapper that bounds how long a
client may take to send a body.

`observed(route, handler)` wraps each route's handler (app/main.py wires every route, and the
fallback as `other`): the request id in (the caller's X-Request-ID if plain, else a new one; set
in storage.telemetry.logs.request_id for every log line the request causes), errors out as
envelopes, the request's extra response headers on whatever answers it, then the metrics
(sluice_http_requests_total and the duration histogram by the route's template, never the raw
path; 429s in sluice_rate_limit_refusals_total by policy) and one access log line. Wrapping each
route rather than adding a BlackSheep middleware is what tells it the route's template, at the
same cost: one layer around the handler either way. When tracing is on (OTEL_*;
storage/telemetry/tracing.py) the handler runs in the request's server span, which continues the
caller's W3C `traceparent`.
"""

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from blacksheep import Request, Response

from app.access.rate_limits import refusal_policy
from app.http.errors import RateLimited, RequestTimeout, error_response
from storage.telemetry import tracing
from storage.telemetry.logs import request_id as current_request_id
from storage.telemetry.metrics import ApiMetrics

# Echo a caller's id only if it is short and plain, so it cannot inject into logs or headers.
SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
# How often waiting body reads are checked against their deadline: a late body is answered
# at most this long after SLUICE_BODY_TIMEOUT_SECONDS.
SWEEP_SECONDS = 0.5
# The one attribute Sluice adds to a Request (not `context`: BlackSheep's HTTP client uses that
# name). BlackSheep's Request does not declare it, so only the two functions below touch it.
CONTEXT_ATTRIBUTE = "api_context"
# The route label of requests no route matched (404, 405).
UNMATCHED = "other"

access_log = logging.getLogger("sluice.access")
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class RequestContext:
    """What the API keeps per request beside BlackSheep's Request. observed() attaches it to the
    Request, and endpoint() hands it to the handler as `Call.context`."""

    request_id: str
    # Set on the response whether the handler returns or raises (a 429 carries its rate-limit
    # headers, a rejected pixel event its drop reason and CORS headers); later ones win.
    response_headers: list[tuple[bytes, bytes]]
    # The workspace of the API key that made the request, once authenticated: the access log's.
    workspace_id: int | None = None


def attach_context(request: Request, context: RequestContext) -> None:
    setattr(request, CONTEXT_ATTRIBUTE, context)


def request_context(request: Request) -> RequestContext:
    """The context observed() attached to the request."""
    context: RequestContext = getattr(request, CONTEXT_ATTRIBUTE)
    return context


def new_request_id() -> str:
    return "req_" + os.urandom(8).hex()


def observed(route: str, handler: Endpoint, metrics: ApiMetrics | None = None) -> Endpoint:
    """`handler` (the endpoint of the route whose template is `route`) as the API serves it."""
    route_metrics = metrics.route(route) if metrics is not None else None

    async def serve(request: Request) -> Response:
        started = time.perf_counter()
        incoming = request.get_first_header(b"x-request-id")
        if incoming is not None and SANE_REQUEST_ID.match(incoming):
            request_id = incoming.decode()
        else:
            request_id = new_request_id()
        token = current_request_id.set(request_id)
        try:
            context = RequestContext(request_id, [])
            attach_context(request, context)
            with tracing.request_span(route, request.method, request.get_first_header) as span:
                try:
                    response = await handler(request)
                except Exception as exc:  # noqa: BLE001 - every error leaves as an envelope, never a bare 500
                    response = error_response(exc, request_id)
                    if metrics is not None and isinstance(exc, RateLimited):
                        metrics.refused(refusal_policy(exc.headers + context.response_headers))
                tracing.answered(span, response.status)
            response.set_header(b"X-Request-ID", request_id.encode())
            for name, value in context.response_headers:
                response.set_header(name, value)
            seconds = time.perf_counter() - started
            if route_metrics is not None:
                route_metrics.observe(request.method, response.status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                log_access(request.method, route, response.status, seconds, context)
            return response
        finally:
            current_request_id.reset(token)

    return serve


def log_access(method: str, route: str, status: int, seconds: float, context: RequestContext) -> None:
    """One line per request: never the key, the body, the query string or the client's address."""
    duration_ms = round(seconds * 1000, 3)
    fields: dict = {
        "request_id": context.request_id,
        "route": route,
        "method": method,
        "status": status,
        "duration_ms": duration_ms,
    }
    if context.workspace_id is not None:
        fields["workspace_id"] = context.workspace_id
    access_log.info("%s %s %d %.3f", method, route, status, duration_ms, extra=fields)


class BodyDeadline:
    """The ASGI app with each request's body reads bounded to `seconds` from its first read.

    The ASGI server waits for a body as long as the client keeps the connection open (a body
    that declared 100 bytes and sent 20 held its request past two minutes), so slow clients
    could hold every request slot. A late read ends in RequestTimeout, which observed() answers
    as 408. A timer per request costs 3 µs on uvloop (a pixel POST costs ~125 µs), so
    instead each waiting read is noted with its deadline and one sweep every SWEEP_SECONDS
    cancels the late ones. Requests that never read a body pay nothing.
    """

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds
        self.reading: dict[asyncio.Task, float] = {}  # tasks waiting in receive() → their deadline
        self.late: set[asyncio.Task] = set()  # cancelled by the sweep, not by anyone else
        self.sweeper: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            return await self.app(scope, self._bounded(receive), send)
        try:
            return await self.app(scope, receive, send)
        finally:
            if scope["type"] == "lifespan" and self.sweeper is not None:
                self.sweeper.cancel()

    def _bounded(self, receive):
        deadline = None

        async def receive_in_time():
            nonlocal deadline
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.seconds
                if self.sweeper is None:
                    self.sweeper = loop.create_task(self._sweep())
            elif loop.time() >= deadline:
                raise RequestTimeout(self.seconds)
            task = asyncio.current_task()
            self.reading[task] = deadline
            try:
                return await receive()
            except asyncio.CancelledError:
                if task not in self.late:
                    raise
                self.late.discard(task)
                task.uncancel()
                raise RequestTimeout(self.seconds) from None
            finally:
                self.reading.pop(task, None)

        return receive_in_time

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for task in [t for t, deadline in self.reading.items() if deadline <= now]:
                del self.reading[task]
                self.late.add(task)
                task.cancel()
