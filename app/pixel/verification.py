"""Domain verification: does the caller control a host it claims? POST /pixel/domains/{id}/verify.

Looked up in order, as search consoles do, until one finds the claim's token:
1. DNS TXT `sluice-verification=<token>` at `_sluice-verification.<host>`, then at `<host>`
   (dnspython; the nameservers of SLUICE_DNS_NAMESERVERS, else the system's);
2. the file `https://<host>/.well-known/sluice-verification.txt` holding the token (http:// when
   https cannot answer);
3. `<meta name="sluice-verification" content="<token>">` in the home page.
Fetches go through the webhooks' SSRF guard (ingest/webhooks/ssrf.py: public addresses only, unless
SLUICE_WEBHOOK_ALLOWED_NETWORKS opens some), with short timeouts, a few KB read, and
redirects followed only within the host. A success goes to storage (mark_verified); a failure
says what each look-up found.
"""

import asyncio
import enum
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import httpx

from app.http.errors import VerificationFailed
from ingest.webhooks.ssrf import Guard, UnsafeAddress, guarded_transport, system_resolver
from storage.postgres import domains

TXT_LABEL = "_sluice-verification"
TXT_PREFIX = "sluice-verification="
FILE_PATH = "/.well-known/sluice-verification.txt"
META_NAME = "sluice-verification"
# A person waits on the answer: each DNS query gets a few seconds (a resolver retries within
# it), each fetch a few more; the lookups of one kind run side by side.
DNS_SECONDS = 3.0
FETCH_SECONDS = 5.0
FILE_MAX_BYTES = 1024  # the file holds a token of 32 characters
PAGE_MAX_BYTES = 65_536  # the meta tag belongs in <head>, near the top of the page
MAX_REDIRECTS = 3
SHOWN_CHARS = 120  # of what a look-up found, in the failure message
# identity: the byte caps above then bound what is decompressed too.
REQUEST_HEADERS = {"user-agent": "Sluice-Domain-Verification/1.0", "accept-encoding": "identity"}


class Method(enum.Enum):
    DNS_TXT = "dns_txt"
    FILE = "file"
    META_TAG = "meta_tag"


@dataclass(frozen=True)
class Check:
    """One look-up: what was asked, what came back, and whether it holds the token."""

    method: Method
    looked_up: str
    found: str
    passed: bool = False

    def body(self) -> dict:
        return {"method": self.method.value, "looked_up": self.looked_up, "found": self.found, "passed": self.passed}


def instructions(host: str, token: str) -> dict:
    """Where the token may be put: the domain's `verification` fields."""
    return {
        "token": token,
        "dns_txt_name": f"{TXT_LABEL}.{host}",
        "dns_txt_value": TXT_PREFIX + token,
        "file_url": f"https://{host}{FILE_PATH}",
        "meta_tag": f'<meta name="{META_NAME}" content="{token}">',
    }


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")


# -- DNS ------------------------------------------------------------------------------------


def dns_resolver(nameservers: tuple) -> dns.asyncresolver.Resolver:
    """SLUICE_DNS_NAMESERVERS' servers, else the system's (/etc/resolv.conf)."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = DNS_SECONDS
    return resolver


async def txt_check(resolver, name: str, token: str) -> Check:
    looked_up = f"DNS TXT {name}"
    try:
        answer = await resolver.resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return Check(Method.DNS_TXT, looked_up, "no such name (NXDOMAIN)")
    except dns.resolver.NoAnswer:
        return Check(Method.DNS_TXT, looked_up, "no TXT record")
    except dns.exception.Timeout:
        return Check(Method.DNS_TXT, looked_up, f"no answer within {DNS_SECONDS:g} s")
    except dns.exception.DNSException as exc:
        return Check(Method.DNS_TXT, looked_up, f"DNS error: {exc}")
    # A TXT record longer than 255 bytes arrives as several strings that make one value.
    values = [b"".join(rdata.strings).decode("utf-8", "replace").strip() for rdata in answer]
    if TXT_PREFIX + token in values:
        return Check(Method.DNS_TXT, looked_up, f"{TXT_PREFIX}{token}", passed=True)
    return Check(
        Method.DNS_TXT,
        looked_up,
        f"{len(values)} TXT record(s), none is {TXT_PREFIX}{token}: " + ", ".join(_shown(v) for v in values[:5]),
    )


def address_resolver(resolver: dns.asyncresolver.Resolver):
    """The SSRF guard's resolver, asking the same nameservers as the TXT look-ups."""

    async def addresses(host: str, port: int) -> list[str]:
        found = []
        for rdtype in ("A", "AAAA"):
            try:
                found += [rdata.address for rdata in await resolver.resolve(host, rdtype)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise OSError(str(exc) or type(exc).__name__) from exc
        return found

    return addresses


# -- the site -------------------------------------------------------------------------------


class MetaTags(HTMLParser):
    """The content of every <meta name="sluice-verification"> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.contents: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "meta" and attributes.get("name", "").lower() == META_NAME:
            self.contents.append(attributes.get("content", "").strip())


async def _read_start(response: httpx.Response, limit: int) -> str:
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= limit:
            break
    return bytes(kept[:limit]).decode("utf-8", "replace")


def _same_site(location: str, host: str) -> bool:
    try:
        parts = urlsplit(location)
        port = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname == host and port in (None, 80, 443)


async def fetch(client: httpx.AsyncClient, url: str, host: str, limit: int) -> tuple[str | None, str]:
    """(the start of a 2xx body, else None; what happened, for the message). FETCH_SECONDS bound
    the whole exchange, redirects included."""
    try:
        async with asyncio.timeout(FETCH_SECONDS):
            return await _follow(client, url, host, limit)
    except (TimeoutError, httpx.TimeoutException):
        return None, f"no answer within {FETCH_SECONDS:g} s"
    except UnsafeAddress as exc:
        return None, f"refused by the SSRF guard: {exc}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _follow(client: httpx.AsyncClient, url: str, host: str, limit: int) -> tuple[str | None, str]:
    for _hop in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", url) as response:
            if not response.is_redirect:
                if not response.is_success:
                    return None, f"HTTP {response.status_code}"
                return await _read_start(response, limit), f"HTTP {response.status_code}"
            location = urljoin(url, response.headers.get("location", ""))
        if not _same_site(location, host):
            return None, f"redirect to {_shown(location)} (only redirects within {host} are followed)"
        url = location
    return None, f"more than {MAX_REDIRECTS} redirects"


async def site_checks(client: httpx.AsyncClient, host: str, token: str, method: Method) -> list[Check]:
    """The file, or the home page's meta tag: https first, http when https gave no 2xx."""
    path, limit = (FILE_PATH, FILE_MAX_BYTES) if method is Method.FILE else ("/", PAGE_MAX_BYTES)
    checks: list[Check] = []
    for url in (f"https://{host}{path}", f"http://{host}{path}"):
        body, note = await fetch(client, url, host, limit)
        if body is not None:
            passed, seen = _look(method, body, token)
            return [*checks, Check(method, f"GET {url}", f"{note}, {seen}", passed)]
        checks.append(Check(method, f"GET {url}", note))
    return checks


def _look(method: Method, body: str, token: str) -> tuple[bool, str]:
    """(whether the fetched body holds the token, what it holds instead)."""
    if method is Method.FILE:
        text = body.strip()
        return token in text, "holding the token" if token in text else _shown(text) if text else "an empty file"
    contents = _meta_contents(body)
    if token in contents:
        return True, "holding the token"
    if contents:
        return False, f'<meta name="{META_NAME}"> content ' + ", ".join(_shown(c) for c in contents)
    return False, f'no <meta name="{META_NAME}"> in its first {PAGE_MAX_BYTES // 1024} KB'


def _meta_contents(page: str) -> list[str]:
    parser = MetaTags()
    try:
        parser.feed(page)
    except (AssertionError, ValueError):  # the few markup errors html.parser raises on
        pass
    return parser.contents


# -- the whole ------------------------------------------------------------------------------


async def run_checks(host: str, token: str, nameservers: tuple, allowed_networks: tuple) -> list[Check]:
    """The look-ups in order of preference, stopping at the first kind that finds the token.
    Fetches may reach `allowed_networks` although private, as webhook deliveries may."""
    try:
        resolver = dns_resolver(nameservers)
    except dns.exception.DNSException as exc:  # no /etc/resolv.conf, and none configured
        return [Check(Method.DNS_TXT, "DNS", f"no resolver: {exc}")]
    checks = list(
        await asyncio.gather(txt_check(resolver, f"{TXT_LABEL}.{host}", token), txt_check(resolver, host, token))
    )
    if any(check.passed for check in checks):
        return checks
    guard = Guard(allowed_networks, address_resolver(resolver) if nameservers else system_resolver)
    async with httpx.AsyncClient(
        transport=guarded_transport(guard, True, 4),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(FETCH_SECONDS),
        headers=REQUEST_HEADERS,
    ) as client:
        for found in await asyncio.gather(
            site_checks(client, host, token, Method.FILE), site_checks(client, host, token, Method.META_TAG)
        ):
            checks += found
    return checks


async def verify_claim(
    pool, nameservers: tuple, allowed_networks: tuple, workspace_id: int, domain_id: int
) -> tuple[dict, Check]:
    """Check the claim and mark it verified: (its row, the check that passed); VerificationFailed else."""
    row = await domains.get_domain(pool, workspace_id, domain_id)
    checks = await run_checks(row["host"], row["verification_token"], nameservers, allowed_networks)
    passed = next((check for check in checks if check.passed), None)
    if passed is None:
        raise VerificationFailed(failure_message(row["host"], checks), checks=[c.body() for c in checks])
    return await domains.mark_verified(pool, workspace_id, domain_id, passed.method.value), passed


def failure_message(host: str, checks: list[Check]) -> str:
    found = "; ".join(f"{check.looked_up}: {check.found}" for check in checks)
    return f"The verification token of {host} was found nowhere. {found}."
