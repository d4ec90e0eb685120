"""The SSRF guard and TLS checking inside real deliveries: the dispatcher, configured as an operator
who allows no private network gets it, sends to a name that resolves to loopback, where a listener
records every connection; and to a receiver whose certificate is for another name. Names resolve
through the system resolver (socket.getaddrinfo, which the event loop's getaddrinfo calls), patched
so chosen names answer with chosen addresses; real Postgres on a database of this module's own, so
the attempt counters count only these deliveries."""

import os
import random
import socket
import uuid

import pytest
from prometheus_client import REGISTRY

from ingest.webhooks import delivery
from ingest.webhooks.dispatcher import Dispatcher
from ingest.webhooks.signing import generate_secret
from storage.config import WebhooksConfig, load
from storage.postgres import webhooks
from storage.postgres.pool import create_pool
from tests.conftest import Tenants, fresh_database
from tests.integration.ingest.test_dispatcher import Clock, deliveries, make_key

LOOPBACK_ALLOWED = "127.0.0.0/8,::1/128"


@pytest.fixture(scope="module")
def own_database():
    with fresh_database(os.environ["DATABASE_URL"], "sluice_guard") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def pool(own_database):
    pool = await create_pool(own_database, 4)
    yield pool
    await pool.close()


@pytest.fixture
def workspace(own_database):
    return Tenants(own_database).workspace()


@pytest.fixture
def dns(monkeypatch) -> dict[str, str]:
    """name → address: what the system resolver answers for these names during the test."""
    answers: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, family, type, proto, flags)
        address, number = answers[name], int(port or 0)
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, number, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, number))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def configured(ca_path: str, **environ: str) -> WebhooksConfig:
    """The dispatcher's configuration from the environment, without the test suite's allow-list."""
    base = {k: v for k, v in os.environ.items() if k != "SLUICE_WEBHOOK_ALLOWED_NETWORKS"}
    return load({**base, "SLUICE_WEBHOOK_CA_BUNDLE": ca_path, **environ}).webhooks


async def run_dispatcher(pool, config: WebhooksConfig, clock: Clock) -> int:
    async with delivery.create_client(config) as client:
        return await Dispatcher(pool, config, client, clock, random.Random(5)).run_once()


async def add_endpoint(pool, workspace, url: str) -> dict:
    return await webhooks.create_endpoint(pool, workspace["id"], url, ["api_key.created"], generate_secret())


def attempts_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("sluice_webhook_attempts_total", {"outcome": outcome}) or 0.0


async def attempts_of(pool, delivery_id: int) -> list[tuple]:
    rows = await pool.fetch(
        "SELECT attempt, status_code, error FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id", delivery_id
    )
    return [(r["attempt"], r["status_code"], r["error"]) for r in rows]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_a_name_resolving_to_loopback_is_refused_without_connecting(
    pool, workspace, https_receiver, listener, dns, address
):
    name = f"hooks-{uuid.uuid4().hex[:8]}.partner.test"
    dns[name] = address
    hook = await add_endpoint(pool, workspace, f"https://{name}:{listener.port}/inbound")
    await make_key(pool, workspace)
    refused, clock = attempts_counted("refused"), Clock()

    assert await run_dispatcher(pool, configured(https_receiver.ca_path), clock) == 1
    [row] = await deliveries(pool, hook["id"])
    assert (row["status"], row["attempt"], row["response_code"]) == ("retrying", 1, None)
    assert row["error"] == f"Refused by the SSRF guard: {name} resolves to {address}, a non-public address"
    assert row["next_attempt_at"] is not None  # refused like any failure: retried on the schedule
    assert await attempts_of(pool, row["id"]) == [(1, None, row["error"])]
    assert attempts_counted("refused") == refused + 1
    assert listener.seen() == [], "the delivery connected to a loopback address"

    # The retry, with loopback allowed, does connect: the listener stood where the request would go.
    clock.at(row["next_attempt_at"])
    allowed = configured(https_receiver.ca_path, SLUICE_WEBHOOK_ALLOWED_NETWORKS=LOOPBACK_ALLOWED)
    assert await run_dispatcher(pool, allowed, clock) == 1
    assert listener.seen() == [address]
    [row] = await deliveries(pool, hook["id"])
    assert row["attempt"] == 2 and not row["error"].startswith("Refused"), row["error"]


async def test_a_certificate_for_another_name_fails_the_delivery_before_anything_is_posted(
    pool, workspace, https_receiver, dns
):
    """The receiver's certificate, from a CA the dispatcher trusts, names localhost and receiver.test;
    the same receiver at the same address under another name must not get the event."""
    wrong, right = f"elsewhere-{uuid.uuid4().hex[:8]}.test", "receiver.test"
    dns[wrong] = dns[right] = "127.0.0.1"
    wrong_path, right_path = f"/{uuid.uuid4().hex[:12]}/wrong", f"/{uuid.uuid4().hex[:12]}/right"
    mismatched = await add_endpoint(pool, workspace, https_receiver.url(wrong_path, host=wrong))
    matching = await add_endpoint(pool, workspace, https_receiver.url(right_path, host=right))
    await make_key(pool, workspace)
    config = configured(https_receiver.ca_path, SLUICE_WEBHOOK_ALLOWED_NETWORKS=LOOPBACK_ALLOWED)

    assert await run_dispatcher(pool, config, Clock()) == 2
    [ok] = await deliveries(pool, matching["id"])
    assert (ok["status"], ok["response_code"]) == ("success", 200)
    assert len(https_receiver.at(right_path)) == 1
    [row] = await deliveries(pool, mismatched["id"])
    assert (row["status"], row["attempt"], row["response_code"]) == ("retrying", 1, None), row["error"]
    assert row["next_attempt_at"] is not None
    assert "certificate" in row["error"].lower() and "hostname" in row["error"].lower(), row["error"]
    assert https_receiver.at(wrong_path) == [], "the event was posted to a host whose certificate names another"
    assert await attempts_of(pool, row["id"]) == [(1, None, row["error"])]
