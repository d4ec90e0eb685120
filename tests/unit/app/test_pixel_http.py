"""The pixel's HTTP layer in process: BlackSheep's TestClient against the real routes and middleware,
with an InMemorySink for Kafka and a site cache filled up front for Postgres.

What is checked here is what the API answers (statuses, envelopes, per-event results, headers,
what it hands to the sink). What Kafka does with it stays tested against Kafka
(tests/integration/ingest/test_producer.py, tests/e2e/test_pixel.py).
"""

import time

import orjson
import pytest
from blacksheep.contents import ASGIContent
from blacksheep.testing import TestClient

from app.http.routing import Services, ServicesHolder
from app.main import build_application
from app.pixel.intake import Pixel
from app.pixel.sites import Site, Unserved
from ingest.events import Topics
from ingest.handoff.sink import InMemorySink
from ingest.handoff.spool import SpoolFull
from storage.config import load
from storage.redis.salts import Cached

SHOP = "shop.example.com"
QUIET = "quiet.example.com"  # a site with custom events switched off
UNKNOWN = "unregistered.example.net"
CHROME = (
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0.0.0 Safari/537.36"
)
BROWSER = [(b"User-Agent", CHROME)]
# Rate limits off: the pixel's per-IP limiter would need Redis (tested in tests/e2e/test_pixel.py).
ENVIRON = {"SLUICE_RATE_LIMITS": "off", "SLUICE_MAX_BODY_BYTES": "65536", "SLUICE_PIXEL_MAX_BATCH": "5"}


def cached_pixel(config, sink: InMemorySink) -> Pixel:
    """A Pixel that needs neither Postgres nor Redis: every host it will be asked about is in its
    site cache, and today's salt is known (as after its first Redis round trip of the day)."""
    pixel = Pixel(config, None, None, sink)
    until = time.monotonic() + 3600
    pixel.sites.entries.update(
        {
            SHOP: (until, Site(1, 7, SHOP, True, True, True, True, 1.0)),
            QUIET: (until, Site(2, 8, QUIET, True, True, False, True, 1.0)),
            UNKNOWN: (until, Unserved.UNKNOWN),
        }
    )
    for days_ago in (0, 1):  # today's salt, and yesterday's for the first minutes of a day
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - days_ago * 86_400))
        pixel.salts.periods[day] = Cached(b"s" * 32, shared=True, retry_at=0.0)
    return pixel


async def started(sink: InMemorySink):
    config = load(ENVIRON)
    topics = Topics.with_prefix(config.shared.kafka_topic_prefix)
    # Only what the pixel's public routes use; the rest (Postgres, Redis, auth) stays None.
    services = Services(config, topics, None, None, None, sink, None, None, None, cached_pixel(config, sink), None)
    holder = ServicesHolder()
    holder.services = services
    app = build_application(holder)
    await app.start()
    return TestClient(app), services


@pytest.fixture
async def api():
    """(client, services, sink) of an application whose sink keeps what it is handed."""
    sink = InMemorySink()
    client, services = await started(sink)
    return client, services, sink


def event(host: str = SHOP, **fields) -> dict:
    return {"event": "pageview", "url": f"https://{host}/products/1?utm_source=news", **fields}


def asgi_body(raw: bytes) -> ASGIContent:
    """The body as an ASGI server hands it to BlackSheep (app/http/bodies.py reads `receive`)."""

    async def receive() -> dict:
        return {"type": "http.request", "body": raw, "more_body": False}

    return ASGIContent(receive)


async def post(client: TestClient, body, headers=(), content_type: bytes = b"application/json"):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    framing = [(b"Content-Type", content_type), (b"Content-Length", str(len(raw)).encode())]
    return await client.post("/api/v1/pixel/track", headers=BROWSER + framing + list(headers), content=asgi_body(raw))


async def answer(response) -> dict:
    return orjson.loads(await response.read())


async def test_an_accepted_event_is_handed_to_the_sink_and_answered_with_its_id(api):
    client, services, sink = api
    r = await post(client, event(), [(b"Origin", f"https://{SHOP}".encode())])
    assert r.status == 200 and await answer(r) == {"tracked": True}
    [record] = [orjson.loads(value) for value in sink.values(services.topics.pixel)]
    assert (record["workspace_id"], record["event"], record["source"]) == (7, "pageview", "json")
    assert r.headers.get_first(b"X-Sluice-Event-ID").decode() == record["event_id"]
    assert r.headers.get_first(b"Access-Control-Allow-Origin") == f"https://{SHOP}".encode()
    assert r.headers.get_first(b"X-Request-ID").startswith(b"req_")


async def test_an_origin_no_site_serves_gets_no_cors(api):
    client, _services, _sink = api
    r = await post(client, event(), [(b"Origin", f"https://{UNKNOWN}".encode())])
    assert r.status == 200
    assert r.headers.get_first(b"Access-Control-Allow-Origin") is None
    assert r.headers.get_first(b"Vary") == b"Origin"


async def test_a_batch_answers_207_per_event_and_hands_over_only_the_accepted(api):
    client, services, sink = api
    batch = [event(), {"event": "bad name", "url": "nope"}, event(UNKNOWN), event(QUIET, event="click")]
    r = await post(client, batch)
    assert r.status == 207
    body = await answer(r)
    assert (body["accepted"], body["dropped"], body["rejected"]) == (1, 1, 2)
    accepted, invalid, unknown, disabled = body["results"]
    assert accepted["status"] == "accepted" and accepted["index"] == 0
    assert invalid["status"] == "rejected" and invalid["error"] == "validation_failed"
    assert set(invalid["errors"]) == {"event", "url"}
    assert unknown["status"] == "rejected" and unknown["error"] == "unknown_domain"
    assert disabled == {"index": 3, "status": "dropped", "reason": "disabled"}
    assert r.headers.get_first(b"X-Sluice-Drop-Reason") == b"disabled, invalid, unknown_domain"
    records = [orjson.loads(value) for value in sink.values(services.topics.pixel)]
    assert [(rec["event_id"], rec["source"]) for rec in records] == [(accepted["event_id"], "batch")]


async def test_a_batch_of_only_rejected_events_is_an_error_envelope_and_of_valid_ones_200(api):
    client, _services, _sink = api
    bad = await post(client, [{"event": "x"}, {"url": "https://a.b/"}])
    assert bad.status == 422
    body = await answer(bad)
    assert body["error"] == "validation_failed" and body["message"]
    assert body["errors"] == {"0.url": ["The url field is required."], "1.event": ["The event field is required."]}
    assert (body["accepted"], body["dropped"], body["rejected"]) == (0, 0, 2)
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected"]
    unknown = await post(client, [event(UNKNOWN), event(UNKNOWN, event="click")])
    assert unknown.status == 403
    body = await answer(unknown)
    assert body["error"] == "unknown_domain" and body["rejected"] == 2 and "errors" not in body
    mixed = await post(client, [event(UNKNOWN), {"event": "x"}])
    assert mixed.status == 422 and set((await answer(mixed))["errors"]) == {"1.url"}
    ok = await post(client, [event(), event(event="click")])
    assert ok.status == 200 and (await answer(ok))["accepted"] == 2


async def test_a_rejected_event_is_a_422_envelope_carrying_its_drop_reason(api):
    client, _services, sink = api
    r = await post(client, {"event": "has space", "url": f"https://{SHOP}/", "color": "red"})
    assert r.status == 422
    body = await answer(r)
    assert body["error"] == "validation_failed" and set(body["errors"]) == {"event", "color"}
    # Set by the handler before it raised: the middleware puts it on the error envelope too.
    assert r.headers.get_first(b"X-Sluice-Drop-Reason") == b"invalid"
    assert sink.sent == []


async def test_an_unknown_domain_is_refused_with_403_naming_the_host(api):
    client, _services, _sink = api
    r = await post(client, event(UNKNOWN))
    assert r.status == 403
    body = await answer(r)
    assert body["error"] == "unknown_domain" and body["host"] == UNKNOWN


@pytest.mark.parametrize(
    "raw, content_type, error",
    [
        (b"{oops", b"text/plain", "invalid_json"),
        (b"event=x", b"application/x-www-form-urlencoded", "unsupported_content_type"),
    ],
)
async def test_an_unreadable_body_or_odd_content_type_is_400(api, raw, content_type, error):
    client, _services, _sink = api
    r = await post(client, raw, content_type=content_type)
    assert r.status == 400 and (await answer(r))["error"] == error


async def test_a_body_over_its_limit_is_413_and_a_batch_over_its_maximum_422(api):
    client, _services, sink = api
    big = await post(client, event(properties={"x": "y" * 70_000}), content_type=b"text/plain")
    assert big.status == 413 and (await answer(big))["error"] == "payload_too_large"
    many = await post(client, [event()] * 6)
    assert many.status == 422 and (await answer(many))["errors"] == {
        "body": ["A batch holds at most 5 events; this one has 6."]
    }
    assert sink.sent == []


async def test_the_gif_variant_answers_a_gif_that_is_never_cached(api):
    client, services, sink = api
    query = {"event": "pageview", "url": f"https://{SHOP}/no-js"}
    r = await client.get("/api/v1/pixel/track", headers=BROWSER, query=query)
    assert r.status == 200 and (await r.read()).startswith(b"GIF89a")
    assert b"no-store" in r.headers.get_first(b"Cache-Control")
    [record] = [orjson.loads(value) for value in sink.values(services.topics.pixel)]
    assert (record["path"], record["source"]) == ("/no-js", "gif")


async def test_preflight_allows_a_cached_sites_origin_only(api):
    client, _services, _sink = api
    asking = [(b"Access-Control-Request-Method", b"POST")]
    allowed = await client.options("/api/v1/pixel/track", headers=asking + [(b"Origin", f"https://{SHOP}".encode())])
    assert allowed.status == 204
    assert allowed.headers.get_first(b"Access-Control-Allow-Origin") == f"https://{SHOP}".encode()
    refused = await client.options("/api/v1/pixel/track", headers=asking + [(b"Origin", f"https://{UNKNOWN}".encode())])
    assert refused.status == 403 and (await answer(refused))["error"] == "origin_not_allowed"


async def test_a_full_spool_answers_503_with_retry_after_and_counts_the_events_as_spool_full():
    sink = InMemorySink(fail_with=SpoolFull(retry_after=7))
    client, services = await started(sink)
    r = await post(client, [event(), event(event="click")])
    assert r.status == 503 and r.headers.get_first(b"Retry-After") == b"7"
    assert (await answer(r))["error"] == "service_unavailable"
    assert services.pixel.accepted == 0
    assert dict(services.pixel.drops.counts) == {(7, "spool_full", "batch"): 2}


async def test_what_is_not_accepted_reaches_the_sink_as_drop_counts(api):
    client, services, sink = api
    await post(client, event(QUIET, event="click"))
    await post(client, [{"event": "x"}, event(UNKNOWN)])
    assert services.pixel.drops.flush() == 3
    counted = {
        (rec["workspace_id"], rec["reason"], rec["source"]): rec["count"]
        for rec in map(orjson.loads, sink.values(services.topics.dropped))
    }
    assert counted == {(8, "disabled", "json"): 1, (0, "invalid", "batch"): 1, (0, "unknown_domain", "batch"): 1}
