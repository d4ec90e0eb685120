"""The pixel's contract over HTTP: Idempotency-Key on track, the error envelope of a refused batch,
403 for a host nobody registered, the per-IP rate-limit headers on every answer; and schemathesis
over the Pixel operations alone, every check and phase, finding nothing.

Every request here comes from a random 10.x.y.z through a trusted proxy: each test has a per-IP
budget of its own, whatever else runs from 127.0.0.1 against the same Redis.
"""

import asyncio
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from dnslib import RCODE
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.conftest import ROOT, Tenants, fresh_database, running_api

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
)
PIXEL_LIMIT = 300  # SLUICE_PIXEL_RATE_LIMIT's default: the bucket holds 300, refilled at 300 a minute


@pytest.fixture(scope="module")
def pixel_api(server_env, tmp_path_factory):
    env = {**server_env, "SLUICE_TRUSTED_PROXIES": "127.0.0.1"}
    with running_api(env, tmp_path_factory.mktemp("pixel-contract")) as url:
        yield url


def random_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 256}.{n // 256 % 256}.{n // 65536 % 254 + 1}"


@pytest.fixture
def visitor(pixel_api):
    """A client of the pixel API from an address of its own."""
    headers = {"User-Agent": CHROME, "X-Forwarded-For": random_ip()}
    with httpx.Client(base_url=pixel_api + "/api/v1", timeout=10, headers=headers) as c:
        yield c


@pytest.fixture
def site(client, tenant):
    """A workspace with a registered host: (workspace, host)."""
    ws, headers = tenant
    host = f"shop-{uuid.uuid4().hex[:8]}.example.com"
    assert client.post("/pixel/domains", headers=headers, json={"host": host}).status_code == 201
    return ws, host


def event(host: str, **fields) -> dict:
    return {"event": "pageview", "url": f"https://{host}/p/{uuid.uuid4().hex[:6]}", **fields}


def stored_ids(clickhouse_query, workspace_id: int, marker: str, seconds: float = 60) -> list[str]:
    """The workspace's event ids in ClickHouse once `marker` (its last event) is among them: one
    workspace is one partition, so every earlier event of it is stored by then."""
    deadline = time.monotonic() + seconds
    while True:
        rows = clickhouse_query(
            "SELECT toString(event_id) FROM events WHERE workspace_id = {ws:UInt64}", {"ws": workspace_id}
        )
        ids = [row[0] for row in rows]
        if marker in ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.3)


# -- Idempotency-Key --------------------------------------------------------------------------------


def test_the_same_idempotency_key_twice_stores_one_event_and_replays_the_answer(visitor, site, clickhouse_query):
    ws, host = site
    keyed = {"Idempotency-Key": str(uuid.uuid4())}
    body = event(host, properties={"plan": "pro"})
    first = visitor.post("/pixel/track", json=body, headers=keyed)
    again = visitor.post("/pixel/track", json=body, headers=keyed)
    assert first.status_code == again.status_code == 200, again.text
    assert first.content == again.content == b'{"tracked":true}'
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    marker = visitor.post("/pixel/track", json=event(host))
    ids = stored_ids(clickhouse_query, ws["id"], marker.headers["X-Sluice-Event-ID"])
    assert sorted(ids) == sorted([first.headers["X-Sluice-Event-ID"], marker.headers["X-Sluice-Event-ID"]])


def test_a_batch_replays_its_207_and_the_key_with_another_body_is_409(visitor, site):
    _ws, host = site
    keyed = {"Idempotency-Key": str(uuid.uuid4())}
    batch = [event(host), {"event": "bad name", "url": f"https://{host}/"}]
    first = visitor.post("/pixel/track", json=batch, headers=keyed)
    again = visitor.post("/pixel/track", json=batch, headers=keyed)
    assert first.status_code == again.status_code == 207
    assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
    other = visitor.post("/pixel/track", json=[event(host)], headers=keyed)
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"


async def test_concurrent_duplicates_are_tracked_once(pixel_api, site, clickhouse_query):
    ws, host = site
    headers = {"User-Agent": CHROME, "X-Forwarded-For": random_ip(), "Idempotency-Key": str(uuid.uuid4())}
    body = event(host)
    async with httpx.AsyncClient(base_url=pixel_api + "/api/v1", timeout=30, headers=headers) as c:
        responses = await asyncio.gather(*[c.post("/pixel/track", json=body) for _ in range(20)])
    ran = [r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    busy = [r for r in responses if r.status_code == 409]
    assert len(ran) == 1 and len(ran) + len(replayed) + len(busy) == 20
    assert all(r.content == ran[0].content for r in replayed)
    assert all(r.json()["error"] == "conflict" and r.headers["retry-after"] == "1" for r in busy)
    with httpx.Client(base_url=pixel_api + "/api/v1", headers={"User-Agent": CHROME}) as c:
        marker = c.post("/pixel/track", json=event(host), headers={"X-Forwarded-For": random_ip()})
    ids = stored_ids(clickhouse_query, ws["id"], marker.headers["X-Sluice-Event-ID"])
    assert sorted(ids) == sorted([ran[0].headers["X-Sluice-Event-ID"], marker.headers["X-Sluice-Event-ID"]])


def test_keys_are_kept_per_host(visitor, client, tenants):
    """The pixel has no API key: its records are kept per host, so two sites' clients that pick the
    same key (a counter, a timestamp) never meet."""
    key = {"Idempotency-Key": f"event-{uuid.uuid4().hex[:6]}"}
    answers = []
    for _ in range(2):
        ws = tenants.workspace()
        host = f"shop-{uuid.uuid4().hex[:8]}.example.com"
        auth = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
        assert client.post("/pixel/domains", headers=auth, json={"host": host}).status_code == 201
        answers.append(visitor.post("/pixel/track", json=event(host), headers=key))
    assert [r.status_code for r in answers] == [200, 200]
    assert not any("Idempotent-Replayed" in r.headers for r in answers)


def test_a_malformed_key_is_422_even_when_no_event_could_be_stored(visitor):
    r = visitor.post("/pixel/track", json={"event": "x"}, headers={"Idempotency-Key": "has space"})
    assert r.status_code == 422 and set(r.json()["errors"]) == {"Idempotency-Key"}


# -- envelopes and statuses -------------------------------------------------------------------------


def test_a_batch_refused_whole_answers_the_error_envelope_with_its_results(visitor, site):
    _ws, host = site
    invalid = visitor.post("/pixel/track", json=[{"event": "x", "url": "nope"}, event("nobody.example.net")])
    assert invalid.status_code == 422
    body = invalid.json()
    assert (body["error"], body["errors"]) == ("validation_failed", {"0.url": [body["results"][0]["errors"]["url"][0]]})
    assert body["message"] == "None of the 2 events was accepted; each result says why."
    assert [r["error"] for r in body["results"]] == ["validation_failed", "unknown_domain"]
    unknown = visitor.post("/pixel/track", json=[event("nobody.example.net")])
    assert unknown.status_code == 403
    assert unknown.json()["error"] == "unknown_domain" and unknown.json()["results"][0]["host"] == "nobody.example.net"
    some = visitor.post("/pixel/track", json=[event(host), event("nobody.example.net")])
    assert some.status_code == 207 and "error" not in some.json()
    assert some.json()["results"][1]["error"] == "unknown_domain"


# -- rate-limit headers -----------------------------------------------------------------------------


def test_every_pixel_answer_carries_the_per_ip_budget(visitor, site):
    _ws, host = site
    answers = {
        "track 200": visitor.post("/pixel/track", json=event(host)),
        "track 207": visitor.post("/pixel/track", json=[event(host), {"event": "x"}]),
        "track 422": visitor.post("/pixel/track", json={"event": "x"}),
        "track 403": visitor.post("/pixel/track", json=event("nobody.example.net")),
        "track 400": visitor.post("/pixel/track", content=b"{oops", headers={"Content-Type": "text/plain"}),
        "gif 200": visitor.get("/pixel/track", params={"url": f"https://{host}/"}),
        "gif 422": visitor.get("/pixel/track", params={"url": "nope"}),
        "config 200": visitor.get("/pixel/config", headers={"Origin": f"https://{host}"}),
    }
    remaining = []
    for name, r in answers.items():
        assert r.status_code == int(name[-3:]), (name, r.text)
        assert all(h in r.headers for h in RATE_LIMIT_HEADERS), (name, r.headers)
        assert int(r.headers["X-RateLimit-Limit"]) == PIXEL_LIMIT
        assert r.headers["RateLimit-Policy"] == f'"pixel";q={PIXEL_LIMIT};w=60'
        assert int(r.headers["X-RateLimit-Reset"]) >= time.time() - 1
        remaining.append(int(r.headers["X-RateLimit-Remaining"]))
    # One budget, spent by each answer in turn (it refills at 5 a second meanwhile).
    assert PIXEL_LIMIT > remaining[0] and remaining[-1] < remaining[0]
    assert all(0 <= n < PIXEL_LIMIT for n in remaining)


# -- schemathesis over the Pixel operations ---------------------------------------------------------


class Nowhere(BaseResolver):
    """A DNS server that knows no name: a verification the fuzzer asks for fails at once."""

    def resolve(self, request, handler):
        reply = request.reply()
        reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def fuzzed_api(server_env, tmp_path_factory):
    """A server on a database of its own, its per-IP pixel budget out of the fuzzer's reach: its
    requests from 127.0.0.1 must neither be refused nor spend the budget other tests share (the
    GCRA bucket is one per address across servers; at a million a minute each request moves it
    by 60 µs)."""
    dns = DNSServer(Nowhere(), address="127.0.0.1", port=0, logger=DNSLogger("-recv,-send,-request,-reply,-error"))
    dns.start_thread()
    with fresh_database(os.environ["DATABASE_URL"], "sluice_pixel_contract") as dsn:
        env = {
            **server_env,
            "DATABASE_URL": dsn,
            "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-pixel-contract-{uuid.uuid4().hex[:6]}.",
            "SLUICE_PIXEL_RATE_LIMIT": "1000000",
            "SLUICE_DNS_NAMESERVERS": f"127.0.0.1:{dns.server.server_address[1]}",
        }
        with running_api(env, tmp_path_factory.mktemp("pixel-fuzz")) as url:
            yield url, Tenants(dsn)
    dns.stop()


def test_schemathesis_finds_no_failure_in_the_pixel_operations(fuzzed_api):
    url, tenants = fuzzed_api
    workspace = tenants.workspace("pixel-schemathesis", tier="enterprise")
    key = tenants.key(workspace["id"])
    venv_bin = os.path.dirname(sys.executable)
    command = [
        os.path.join(venv_bin, "schemathesis"),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--include-tag",
        "Pixel",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        os.environ.get("SLUICE_CONTRACT_EXAMPLES", "40"),
        "--seed",
        os.environ.get("SLUICE_CONTRACT_SEED", "20261202"),
        "--header",
        f"Authorization: Bearer {key}",
    ]
    env = {**os.environ, "NO_COLOR": "1", "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found failures (exit {done.returncode}):\n{report[-20000:]}"
    document = httpx.get(url + "/openapi.json").json()["paths"]
    pixel = sum(1 for ops in document.values() for op in ops.values() if "Pixel" in op.get("tags", ()))
    assert f"Tested: {pixel}" in report, report[-5000:]
