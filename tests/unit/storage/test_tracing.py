"""Tracing: off unless OTEL_* asks, free when off; when on, a request's traceparent is continued,
carried into Kafka headers, linked from the insert span, and the sampler is the environment's."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from blacksheep import Request, Response
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.http.middleware import observed
from storage.telemetry import tracing

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode()


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing.setup("test", {}, exporter=exporter)
    yield exporter
    tracing.shutdown()


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ],
)
def test_only_the_otel_variables_turn_tracing_on(env, on):
    assert tracing.wanted(env) is on


def test_off_the_helpers_are_shared_no_ops():
    assert not tracing.on()
    assert not tracing.setup("api", {})
    assert tracing.request_span("/x", "GET", lambda name: TRACEPARENT) is tracing.NO_SPAN
    assert tracing.insert_span("events", [SimpleNamespace(headers=[("traceparent", TRACEPARENT)])]) is tracing.NO_SPAN
    assert tracing.delivery_span(1, "evt_1", 1) is tracing.NO_SPAN
    assert tracing.record_headers() == []
    with tracing.NO_SPAN as span:
        tracing.answered(span, 200)
        tracing.delivered(span, 500, "HTTP 500")


def test_off_the_sdk_is_never_imported():
    """The API, producer, consumer and dispatcher run without the trace SDK when tracing is off."""
    code = (
        "import sys, asyncio\n"
        "import app.main, ingest.handoff.producer, ingest.worker.consumer, ingest.webhooks.dispatcher\n"
        "from storage.telemetry import tracing\n"
        "assert not tracing.setup('api', {})\n"
        "with tracing.request_span('/x', 'GET', lambda n: None): tracing.record_headers()\n"
        # (redis-py imports opentelemetry.sdk.metrics on its own; the trace SDK is tracing's)
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr


def test_an_unknown_exporter_is_refused():
    with pytest.raises(SystemExit, match="OTEL_TRACES_EXPORTER=zipkin"):
        tracing.setup("api", {"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not tracing.on()


def test_a_request_continues_the_callers_trace_and_its_records_carry_it(spans):
    with tracing.request_span("/v1/track", "POST", {b"traceparent": TRACEPARENT}.get) as span:
        headers = tracing.record_headers()
        tracing.answered(span, 202)
    (server,) = spans.get_finished_spans()
    assert server.name == "POST /v1/track" and server.kind is SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN and server.parent.is_remote
    assert server.attributes["http.route"] == "/v1/track"
    assert server.attributes["http.response.status_code"] == 202
    assert headers == [("traceparent", f"00-{CALLER_TRACE}-{server.context.span_id:016x}-01".encode())]


@pytest.mark.parametrize(
    "sent",
    [
        None,
        b"",
        b"garbage",
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",
        b"01-" + TRACEPARENT[3:],
        TRACEPARENT.upper(),
    ],
)
def test_without_a_valid_traceparent_a_request_starts_a_new_trace(spans, sent):
    with tracing.request_span("/v1/track", "POST", lambda name: sent):
        pass
    (server,) = spans.get_finished_spans()
    assert server.parent is None


def test_outside_a_span_records_carry_no_header(spans):
    assert tracing.record_headers() == []


def test_an_unsampled_caller_is_not_traced_nor_propagated(spans):
    """The default sampler is parent-based: a caller that did not sample keeps it unsampled."""
    unsampled = TRACEPARENT[:-2] + b"00"
    with tracing.request_span("/v1/track", "POST", lambda name: unsampled):
        assert tracing.record_headers() == []
    assert spans.get_finished_spans() == ()


def test_the_sampler_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    tracing.setup("test", {}, exporter=exporter)
    try:
        with tracing.request_span("/v1/track", "POST", lambda name: None):
            assert tracing.record_headers() == []
        assert exporter.get_finished_spans() == ()
    finally:
        tracing.shutdown()


def test_the_insert_span_links_to_the_traces_of_its_records(spans):
    other = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    records = [
        SimpleNamespace(headers=[("traceparent", TRACEPARENT)]),
        SimpleNamespace(headers=[("traceparent", TRACEPARENT)]),  # one link per distinct traceparent
        SimpleNamespace(headers=[("traceparent", other)]),
        SimpleNamespace(headers=[("traceparent", b"malformed")]),
        SimpleNamespace(headers=()),
    ]
    with tracing.insert_span("events", records):
        pass
    (insert,) = spans.get_finished_spans()
    assert insert.name == "INSERT events" and insert.parent is None
    assert insert.attributes["db.operation.batch.size"] == 5
    linked = {(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in insert.links}
    assert linked == {(CALLER_TRACE, CALLER_SPAN), ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")}


def test_an_insert_span_links_at_most_max_links_traces(spans):
    records = [
        SimpleNamespace(headers=[("traceparent", tracing.format_traceparent(i + 1, i + 1, 1))])
        for i in range(tracing.MAX_LINKS + 50)
    ]
    with tracing.insert_span("events", records):
        pass
    (insert,) = spans.get_finished_spans()
    assert len(insert.links) == tracing.MAX_LINKS
    assert insert.attributes["db.operation.batch.size"] == tracing.MAX_LINKS + 50


def test_a_delivery_span_is_a_root_span_with_its_outcome(spans):
    with tracing.delivery_span(7, "evt_1", 2) as span:
        tracing.delivered(span, 503, "HTTP 503")
    (delivery,) = spans.get_finished_spans()
    assert delivery.parent is None and delivery.kind is SpanKind.CLIENT
    assert delivery.attributes["sluice.webhook.endpoint_id"] == 7
    assert delivery.attributes["http.response.status_code"] == 503
    assert not delivery.status.is_ok


async def test_the_api_serves_each_request_in_a_span_continuing_the_caller(spans):
    seen = []

    async def handler(request):
        seen.append(tracing.record_headers())
        return Response(202)

    serve = observed("/v1/track", handler, None)
    response = await serve(Request("POST", b"/v1/track", [(b"traceparent", TRACEPARENT)]))
    assert response.status == 202
    (server,) = spans.get_finished_spans()
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE
    assert server.attributes["http.response.status_code"] == 202
    assert seen == [[("traceparent", f"00-{CALLER_TRACE}-{server.context.span_id:016x}-01".encode())]]


async def test_a_failing_handler_is_answered_and_its_span_marked(spans):
    async def handler(request):
        raise RuntimeError("boom")

    response = await observed("/v1/track", handler, None)(Request("POST", b"/v1/track", []))
    assert response.status == 500
    (server,) = spans.get_finished_spans()
    assert server.attributes["http.response.status_code"] == 500 and not server.status.is_ok


@pytest.mark.parametrize(
    "env", [{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, {"OTEL_TRACES_EXPORTER": "console"}]
)
def test_the_exporters_named_by_the_environment_start_and_stop(env):
    try:
        assert tracing.setup("api", env) and tracing.on()
    finally:
        tracing.shutdown()
    assert not tracing.on()
