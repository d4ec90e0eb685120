"""Domain verification over HTTP against the real stack: a claim proves control of its host by DNS
TXT, a file or a meta tag; the verified claim owns the host and its subdomains; contested
unverified claims serve nobody; verifying takes a host over.

Nothing here touches the internet: the API asks a real DNS server on loopback (dnslib,
SLUICE_DNS_NAMESERVERS), whose A records send the file and page fetches to a real HTTP server on
a loopback address of its own (port 80, as a site's), opened to the SSRF guard by
SLUICE_WEBHOOK_ALLOWED_NETWORKS. Where events land is read back from ClickHouse.
"""

import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from dnslib import QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.conftest import running_api

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
LANDING_SECONDS = 60


class Zone(BaseResolver):
    """An authoritative answer for every name the tests set, NXDOMAIN for the rest."""

    def __init__(self):
        self.records: dict[tuple[str, str], list[str]] = {}

    def set(self, name: str, rtype: str, *values: str) -> None:
        self.records[(name, rtype)] = list(values)

    def resolve(self, request, handler):
        reply = request.reply()
        name, rtype = str(request.q.qname).rstrip(".").lower(), QTYPE[request.q.qtype]
        if not any(known == name for known, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in self.records.get((name, rtype), []):
            reply.add_answer(RR(name, request.q.qtype, rdata=TXT(value) if rtype == "TXT" else A(value), ttl=0))
        return reply


@pytest.fixture(scope="module")
def zone():
    zone = Zone()
    quiet = DNSLogger("-recv,-send,-request,-reply,-truncated,-error,-data")
    server = DNSServer(zone, address="127.0.0.1", port=0, logger=quiet)
    server.start_thread()
    zone.port = server.server.server_address[1]
    yield zone
    server.stop()


class Site:
    """What the sites answer: (host, path) → (status, body, extra headers)."""

    def __init__(self, address: str):
        self.address = address
        self.pages: dict[tuple[str, str], tuple[int, str, dict]] = {}
        self.requests: list[tuple[str, str]] = []

    def serve(self, host: str, path: str, body: str, status: int = 200, headers: dict | None = None) -> None:
        self.pages[(host, path)] = (status, body, headers or {})


@pytest.fixture(scope="module")
def site():
    # A loopback address of its own, so port 80 is free whatever else runs on the machine.
    address = f"127.{random.randrange(1, 255)}.{random.randrange(0, 256)}.{random.randrange(1, 255)}"
    site = Site(address)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            host = (self.headers.get("host") or "").split(":")[0]
            site.requests.append((host, self.path))
            status, body, headers = site.pages.get((host, self.path), (404, "not here", {}))
            data = body.encode()
            self.send_response(status)
            for name, value in {"Content-Type": "text/html; charset=utf-8", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((address, 80), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def verifying_client(server_env, zone, tmp_path_factory):
    env = {
        **server_env,
        "SLUICE_DNS_NAMESERVERS": f"127.0.0.1:{zone.port}",
        "SLUICE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    with running_api(env, tmp_path_factory.mktemp("verifying-api")) as url:
        with httpx.Client(base_url=url + "/api/v1", timeout=30) as client:
            yield client


def apex() -> str:
    return f"alpha-{uuid.uuid4().hex[:10]}.example"


def claim(client, headers, host: str) -> dict:
    r = client.post("/pixel/domains", headers=headers, json={"host": host})
    assert r.status_code == 201, r.text
    return r.json()["data"]


def verify(client, headers, domain: dict):
    return client.post(f"/pixel/domains/{domain['id']}/verify", headers=headers)


def track(client, url: str) -> httpx.Response:
    return client.post("/pixel/track", json={"event": "pageview", "url": url}, headers={"User-Agent": CHROME})


def landed(clickhouse_query, event_ids: list[str]) -> dict[str, int]:
    """event id → the workspace its ClickHouse row is in, once every one has arrived."""
    deadline, rows = time.monotonic() + LANDING_SECONDS, {}
    while time.monotonic() < deadline:
        rows = dict(
            clickhouse_query(
                "SELECT toString(event_id), workspace_id FROM events WHERE toString(event_id) IN {ids:Array(String)}",
                {"ids": event_ids},
            )
        )
        if len(rows) == len(event_ids):
            return rows
        time.sleep(0.3)
    raise AssertionError(f"waited {LANDING_SECONDS} s for {event_ids}, found {rows}")


def rows_of(clickhouse_query, workspace_id: int) -> list[tuple]:
    return clickhouse_query(
        "SELECT host, toString(event_id) FROM events WHERE workspace_id = {ws:UInt64} ORDER BY host",
        {"ws": workspace_id},
    )


def key_headers(tenants) -> tuple[dict, dict]:
    ws = tenants.workspace()
    return ws, {"Authorization": f"Bearer {tenants.key(ws['id'])}"}


# -- verifying -----------------------------------------------------------------------------------


def test_a_new_claim_shows_where_to_put_its_token(verifying_client, tenants):
    _ws, headers = key_headers(tenants)
    host = apex()
    verification = claim(verifying_client, headers, host)["verification"]
    token = verification["token"]
    assert len(token) == 32
    assert verification == {
        "status": "unverified",
        "token": token,
        "dns_txt_name": f"_sluice-verification.{host}",
        "dns_txt_value": f"sluice-verification={token}",
        "file_url": f"https://{host}/.well-known/sluice-verification.txt",
        "meta_tag": f'<meta name="sluice-verification" content="{token}">',
        "method": None,
        "verified_at": None,
        "lost_at": None,
    }


@pytest.mark.parametrize("at_label", [True, False], ids=["at-_sluice-verification", "at-the-host"])
def test_a_dns_txt_record_verifies_the_claim(verifying_client, tenants, zone, at_label):
    _ws, headers = key_headers(tenants)
    host = apex()
    domain = claim(verifying_client, headers, host)
    name = f"_sluice-verification.{host}" if at_label else host
    zone.set(name, "TXT", "v=spf1 -all", domain["verification"]["dns_txt_value"])
    r = verify(verifying_client, headers, domain)
    assert r.status_code == 200, r.text
    verification = r.json()["data"]["verification"]
    assert verification["status"] == "verified" and verification["method"] == "dns_txt"
    assert verification["verified_at"] is not None
    assert f"DNS TXT {name}" in r.json()["message"]
    again = verifying_client.get(f"/pixel/domains/{domain['id']}", headers=headers).json()["data"]
    assert again["verification"] == verification


def test_the_file_on_the_site_verifies_the_claim(verifying_client, tenants, zone, site):
    _ws, headers = key_headers(tenants)
    host = apex()
    domain = claim(verifying_client, headers, host)
    zone.set(host, "A", site.address)
    site.serve(
        host,
        "/.well-known/sluice-verification.txt",
        domain["verification"]["token"] + "\n",
        headers={"Content-Type": "text/plain"},
    )
    r = verify(verifying_client, headers, domain)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["verification"]["method"] == "file"
    assert (host, "/.well-known/sluice-verification.txt") in site.requests


def test_a_meta_tag_on_the_home_page_verifies_the_claim_through_a_redirect_on_the_host(
    verifying_client, tenants, zone, site
):
    _ws, headers = key_headers(tenants)
    host = apex()
    domain = claim(verifying_client, headers, host)
    zone.set(host, "A", site.address)
    site.serve(host, "/", "", status=302, headers={"Location": "/en/"})
    site.serve(host, "/en/", f"<html><head><title>Alpha</title>{domain['verification']['meta_tag']}</head></html>")
    r = verify(verifying_client, headers, domain)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["verification"]["method"] == "meta_tag"


def test_a_failed_verification_says_what_was_looked_up_and_found(verifying_client, tenants, zone, site):
    _ws, headers = key_headers(tenants)
    host = apex()
    domain = claim(verifying_client, headers, host)
    zone.set(f"_sluice-verification.{host}", "TXT", "sluice-verification=not-the-token")
    zone.set(host, "A", site.address)
    site.serve(host, "/", "<html><head><title>No tag here</title></head></html>")
    r = verify(verifying_client, headers, domain)
    # The request is valid: what refuses it is the state of the DNS and the site, so 409, not 422.
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "verification_failed"
    message = body["message"]
    assert f"DNS TXT _sluice-verification.{host}: 1 TXT record(s), none is sluice-verification=" in message
    assert "'sluice-verification=not-the-token'" in message
    assert f"DNS TXT {host}: no TXT record" in message
    assert f"GET https://{host}/.well-known/sluice-verification.txt: ConnectError" in message  # nothing on 443
    assert f"GET http://{host}/.well-known/sluice-verification.txt: HTTP 404" in message
    assert f'GET http://{host}/: HTTP 200, no <meta name="sluice-verification"> in its first 64 KB' in message
    assert [(c["method"], c["passed"]) for c in body["checks"]] == [
        ("dns_txt", False),
        ("dns_txt", False),
        ("file", False),
        ("file", False),
        ("meta_tag", False),
        ("meta_tag", False),
    ]
    unchanged = verifying_client.get(f"/pixel/domains/{domain['id']}", headers=headers).json()["data"]
    assert unchanged["verification"]["status"] == "unverified"


def test_a_redirect_to_another_host_is_not_followed(verifying_client, tenants, zone, site):
    _ws, headers = key_headers(tenants)
    host, elsewhere = apex(), apex()
    domain = claim(verifying_client, headers, host)
    zone.set(host, "A", site.address)
    zone.set(elsewhere, "A", site.address)
    path = "/.well-known/sluice-verification.txt"
    site.serve(host, path, "", status=301, headers={"Location": f"http://{elsewhere}{path}"})
    site.serve(elsewhere, path, domain["verification"]["token"])  # whoever runs `elsewhere` proves nothing here
    r = verify(verifying_client, headers, domain)
    assert r.status_code == 409
    assert f"only redirects within {host} are followed" in r.json()["message"]
    assert (elsewhere, path) not in site.requests


def test_verify_is_404_for_another_workspaces_domain(verifying_client, tenants):
    _ws, headers = key_headers(tenants)
    _other, other_headers = key_headers(tenants)
    domain = claim(verifying_client, headers, apex())
    r = verify(verifying_client, other_headers, domain)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


# -- who gets a host's events ----------------------------------------------------------------------


def test_a_verified_owner_beats_other_workspaces_unverified_claims_on_subdomains(
    verifying_client, tenants, zone, clickhouse_query
):
    owner, owner_headers = key_headers(tenants)
    squatter, squatter_headers = key_headers(tenants)
    host = apex()
    domain = claim(verifying_client, owner_headers, host)
    for sub in ("www", "shop"):
        claim(verifying_client, squatter_headers, f"{sub}.{host}")
    zone.set(f"_sluice-verification.{host}", "TXT", domain["verification"]["dns_txt_value"])
    assert verify(verifying_client, owner_headers, domain).status_code == 200

    ids = []
    for url in (f"https://www.{host}/", f"https://shop.{host}/cart", f"https://{host}/", f"https://a.b.{host}/"):
        r = track(verifying_client, url)
        assert r.status_code == 200, (url, r.text)
        ids.append(r.headers["X-Sluice-Event-ID"])
    assert set(landed(clickhouse_query, ids).values()) == {owner["id"]}
    assert rows_of(clickhouse_query, squatter["id"]) == []
    # A later claim under the verified host is taken (a new owner must be able to claim before
    # verifying) but serves nothing while it is unverified.
    blog = claim(verifying_client, squatter_headers, f"blog.{host}")
    assert blog["verification"]["status"] == "unverified"
    r = track(verifying_client, f"https://blog.{host}/")
    assert r.status_code == 200
    assert set(landed(clickhouse_query, [r.headers["X-Sluice-Event-ID"]]).values()) == {owner["id"]}


def test_contested_unverified_claims_serve_nobody_until_one_verifies(verifying_client, tenants, zone, clickhouse_query):
    first, first_headers = key_headers(tenants)
    second, second_headers = key_headers(tenants)
    host = apex()
    claim(verifying_client, first_headers, host)
    domain = claim(verifying_client, second_headers, host)
    r = track(verifying_client, f"https://{host}/")
    assert r.status_code == 403
    assert r.json()["error"] == "domain_not_verified" and r.json()["host"] == host
    assert "verif" in r.json()["message"] and r.headers["X-Sluice-Drop-Reason"] == "unknown_domain"
    origin = {"Origin": f"https://{host}"}
    assert verifying_client.get("/pixel/config", headers=origin).json() == {"enabled": False}
    assert verifying_client.options("/pixel/track", headers=origin).status_code == 403

    zone.set(f"_sluice-verification.{host}", "TXT", domain["verification"]["dns_txt_value"])
    assert verify(verifying_client, second_headers, domain).status_code == 200
    r = track(verifying_client, f"https://{host}/")
    assert r.status_code == 200, r.text
    assert landed(clickhouse_query, [r.headers["X-Sluice-Event-ID"]]) == {r.headers["X-Sluice-Event-ID"]: second["id"]}
    assert rows_of(clickhouse_query, first["id"]) == []
    config = verifying_client.get("/pixel/config", headers=origin)
    assert config.json()["enabled"] is True and config.headers["Access-Control-Allow-Origin"] == f"https://{host}"


def test_verifying_takes_the_host_from_the_workspace_that_held_it(verifying_client, tenants, zone, clickhouse_query):
    old, old_headers = key_headers(tenants)
    new, new_headers = key_headers(tenants)
    host = apex()
    old_domain = claim(verifying_client, old_headers, host)
    new_domain = claim(verifying_client, new_headers, host)
    zone.set(f"_sluice-verification.{host}", "TXT", old_domain["verification"]["dns_txt_value"])
    assert verify(verifying_client, old_headers, old_domain).status_code == 200
    before = track(verifying_client, f"https://{host}/").headers["X-Sluice-Event-ID"]

    # The DNS changes hands: whoever controls it now wins.
    zone.set(f"_sluice-verification.{host}", "TXT", new_domain["verification"]["dns_txt_value"])
    r = verify(verifying_client, new_headers, new_domain)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["verification"]["status"] == "verified"
    after = track(verifying_client, f"https://{host}/").headers["X-Sluice-Event-ID"]
    assert landed(clickhouse_query, [before, after]) == {before: old["id"], after: new["id"]}

    lost = verifying_client.get(f"/pixel/domains/{old_domain['id']}", headers=old_headers).json()["data"]
    assert lost["verification"]["status"] == "unverified"
    assert lost["verification"]["method"] is None and lost["verification"]["lost_at"] is not None
    payload = tenants.fetchval(
        "SELECT payload FROM outbox WHERE event_type = 'pixel_domain.verification_lost' AND workspace_id = $1",
        old["id"],
    )
    assert payload == {"id": old_domain["id"], "host": host, "lost_at": lost["verification"]["lost_at"]}
    # The old owner cannot win it back without the DNS.
    assert verify(verifying_client, old_headers, old_domain).status_code == 409
