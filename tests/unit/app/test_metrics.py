"""The API's request metrics and access log in process: each request counted under its route's
template (never the raw path), 429s by policy, pixel events by source and reason, and one access
line per request carrying the request's id and fields, never its key, query string or address.

The metrics are read from a registry of the test's own; summing them over processes is
tests/unit/app/test_metrics_multiprocess.py's and tests/e2e/test_metrics.py's.
"""

import logging

import pytest
from blacksheep import Request, Response
from blacksheep.testing import TestClient
from prometheus_client import CollectorRegistry

from app.access.rate_limits import rate_limit_headers, rate_limited, refusal_policy
from app.http.errors import Unauthorized
from app.http.metrics import Exposition
from app.http.middleware import UNMATCHED, observed, request_context
from app.http.routing import Services, ServicesHolder
from app.main import build_application
from ingest.events import Topics
from ingest.handoff.sink import InMemorySink
from storage.config import load
from storage.redis.rate_limit import Decision
from storage.telemetry import logs
from storage.telemetry.metrics import ApiMetrics
from tests.unit.app.test_pixel_http import ENVIRON, QUIET, cached_pixel, event, post

KEY = "sk_live_" + "k" * 40
REFUSED = Decision(False, 60, 60, 0, 30.0, 1.0)


class NoKeys:
    """An authenticator that knows no key: guarded routes answer 401, unmatched paths 404."""

    async def admit(self, request):
        raise Unauthorized()

    async def meter(self, request):
        return []


@pytest.fixture
async def api(tmp_path):
    """(client, metrics) of the application with its routes observed into a registry of its own."""
    config = load(ENVIRON)
    sink = InMemorySink()
    metrics = ApiMetrics(CollectorRegistry())
    topics = Topics.with_prefix(config.shared.kafka_topic_prefix)
    pixel = cached_pixel(config, sink)
    pixel.metrics = pixel.drops.metrics = metrics
    holder = ServicesHolder()
    holder.services = Services(config, topics, None, None, NoKeys(), sink, None, None, None, pixel, None)
    app = build_application(holder, config, Exposition(tmp_path, metrics))
    await app.start()
    return TestClient(app), metrics


def series(family, suffix: str = "_total") -> dict[tuple, float]:
    """A metric's samples named with `suffix`, by their label values; the zeros left out."""
    samples = family.collect()[0].samples
    return {tuple(s.labels.values()): s.value for s in samples if s.name.endswith(suffix) and s.value}


async def test_requests_are_counted_by_their_routes_template_never_the_raw_path(api):
    client, metrics = api
    for path in ("/api/v1/workspaces/123", "/api/v1/workspaces/456", "/api/v1/workspaces/456?x=1"):
        assert (await client.get(path)).status == 401
    assert (await client.get("/nothing/here/789")).status == 404
    assert series(metrics.requests) == {("/api/v1/workspaces/{id}", "GET", "401"): 3, (UNMATCHED, "GET", "404"): 1}
    assert series(metrics.durations, "_count") == {("/api/v1/workspaces/{id}", "GET"): 3, (UNMATCHED, "GET"): 1}


async def test_pixel_events_are_counted_by_source_and_drop_reason(api):
    client, metrics = api
    await post(client, event())
    await post(client, [event(), event(QUIET, event="click"), {"event": "x"}])
    assert series(metrics.accepted) == {("json",): 1, ("batch",): 1}
    assert series(metrics.dropped) == {("disabled", "batch"): 1, ("invalid", "batch"): 1}


def test_a_refusals_policy_is_read_from_its_rate_limit_headers():
    assert refusal_policy(rate_limit_headers(REFUSED, "pixel")) == "pixel"
    assert refusal_policy(rate_limit_headers(REFUSED, "unauthenticated")) == "auth"
    assert refusal_policy(rate_limit_headers(REFUSED, "enterprise")) == "key"


async def test_a_429_is_counted_as_a_refusal_of_its_policy():
    metrics = ApiMetrics(CollectorRegistry())

    async def over_the_limit(request: Request) -> Response:
        request_context(request).response_headers += rate_limit_headers(REFUSED, "pixel")
        raise rate_limited(REFUSED)

    async def over_the_address_budget(request: Request) -> Response:
        raise rate_limited(REFUSED, rate_limit_headers(REFUSED, "unauthenticated"))

    for handler in (over_the_limit, over_the_address_budget, over_the_address_budget):
        response = await observed("/x", handler, metrics)(Request("GET", b"/x", []))
        assert response.status == 429
    assert series(metrics.refusals) == {("pixel",): 1, ("auth",): 2}


async def test_one_access_line_per_request_with_its_fields_and_never_the_key_or_query(caplog):
    seen_inside = []

    async def handler(request: Request) -> Response:
        request_context(request).workspace_id = 42
        seen_inside.append(logs.request_id.get())
        logging.getLogger("sluice.test").info("inside the request")
        return Response(204)

    serve = observed("/api/v1/things/{id}", handler, None)
    headers = [(b"X-Request-ID", b"req-abc.123"), (b"Authorization", f"Bearer {KEY}".encode())]
    request = Request("DELETE", b"/api/v1/things/9?token=secret-value", headers)
    with caplog.at_level(logging.INFO):
        response = await serve(request)
    assert response.status == 204 and seen_inside == ["req-abc.123"]
    assert logs.request_id.get() == ""  # reset once the request is answered
    [line] = [r for r in caplog.records if r.name == "sluice.access"]
    assert line.getMessage().startswith("DELETE /api/v1/things/{id} 204 ")
    assert (line.request_id, line.route, line.method, line.status, line.workspace_id) == (
        "req-abc.123",
        "/api/v1/things/{id}",
        "DELETE",
        204,
        42,
    )
    assert isinstance(line.duration_ms, float) and line.duration_ms >= 0
    text = line.getMessage() + repr(vars(line))
    assert "secret-value" not in text and KEY not in text and "127.0.0.1" not in text


async def test_an_access_line_without_a_key_has_no_workspace_and_a_new_request_id(api, caplog):
    client, _metrics = api
    with caplog.at_level(logging.INFO, logger="sluice.access"):
        await client.get("/api/v1/workspaces/1", headers={"Authorization": f"Bearer {KEY}"})
    [line] = [r for r in caplog.records if r.name == "sluice.access"]
    assert line.getMessage().startswith("GET /api/v1/workspaces/{id} 401 ")
    assert line.request_id.startswith("req_") and not hasattr(line, "workspace_id")
    assert KEY not in line.getMessage() + repr(vars(line))


async def test_metrics_off_answers_404():
    config = load({**ENVIRON, "SLUICE_METRICS": "off"})
    holder = ServicesHolder()
    holder.services = Services(config, None, None, None, NoKeys(), None, None, None, None, None, None)
    app = build_application(holder, config, None)
    await app.start()
    response = await TestClient(app).get("/metrics")
    assert response.status == 404 and b"SLUICE_METRICS=off" in await response.read()


async def test_a_method_no_route_answers_is_counted_as_other():
    metrics = ApiMetrics(CollectorRegistry())

    async def handler(request: Request) -> Response:
        return Response(405)

    for method in ("PROPFIND", "BREW", "GET"):
        await observed(UNMATCHED, handler, metrics)(Request(method, b"/x", []))
    assert series(metrics.requests) == {(UNMATCHED, "other", "405"): 2, (UNMATCHED, "GET", "405"): 1}
