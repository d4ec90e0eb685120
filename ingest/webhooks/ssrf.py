"""The outbound guard for webhook deliveries: a URL may only reach public addresses.

The host is resolved here, every address it resolves to is checked, and the connection is
made to a checked address: httpcore asks this module's network backend to connect, so no
second DNS lookup happens between check and connect (DNS rebinding gets nothing). IP literals
in every form inet_aton accepts (decimal `2130706433`, octal `0177.0.0.1`, hex, short `127.1`)
and IPv6 forms that embed an IPv4 address (mapped, 6to4, NAT64, Teredo) are judged by the
IPv4 address they stand for. Before the check at registration a host is first normalised as a
browser's URL parser and a resolver would read it (normalise_host), so `127。0。0。1`,
`①②⑦.0.0.1`, `ｌｏｃａｌｈｏｓｔ` or `127.0.0.1.` are judged as the address or name they become.
"""

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import unquote

import httpcore
import httpx
import idna

from storage.compat import httpx_internals

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
# Ranges refused beyond what `ipaddress` calls non-global: multicast counts as global there,
# and the cloud metadata addresses are named so the table reads as documentation.
EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "169.254.169.254/32",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "fd00:ec2::254/128",
        "ff00::/8",
        "fe80::/10",
        "fc00::/7",
        "::/128",
        "::1/128",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# httpx's default: an idle connection to an endpoint is reused for this long.
KEEPALIVE_SECONDS = 5.0
NUMERIC_HOST = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)


class UnsafeAddress(Exception):
    """The URL's host is, or resolves to, an address deliveries may not reach."""


def normalise_host(host: str) -> str:
    """The host as browsers and resolvers read it: percent-decoded (as the WHATWG URL parser does),
    NFKC and UTS-46 mapped (full-width and circled digits, ideographic full stops, case), without
    one trailing dot (`127.0.0.1.` is 127.0.0.1 to both). ValueError: no resolver takes it."""
    text = unicodedata.normalize("NFKC", unquote(host))
    try:
        text = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except idna.IDNAError as exc:
        raise ValueError(f"{host!r} is not a host name: {exc}") from None
    text = text.lower()
    return text[:-1] if text.endswith(".") else text


def literal_address(host: str) -> IPAddress | None:
    """The address a host names by itself (no DNS), in any form a resolver would accept."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_v4(address)
        if inner is not None:
            return is_public(inner)
    if any(address in network for network in EXTRA_BLOCKED if network.version == address.version):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_private)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # An IPv4 or IPv6 sockaddr starts with the address text; (int, bytes) comes only from a
    # Python built without IPv6, whose addresses it could not connect to anyway.
    addresses = (info[4][0] for info in infos)
    return list(dict.fromkeys(a.split("%", 1)[0] for a in addresses if isinstance(a, str)))


class Guard:
    """Decides which addresses a host may be reached at; `allowed` networks pass regardless."""

    def __init__(self, allowed: Iterable = (), resolver: Resolver = system_resolver):
        self.allowed = tuple(allowed)
        self.resolver = resolver

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in n for n in self.allowed if n.version == address.version):
            return True
        return is_public(address)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The checked addresses of host, or UnsafeAddress (any bad one refuses them all)."""
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = [ipaddress.ip_address(a) for a in await self.resolver(host, port)]
            except OSError as exc:
                raise UnsafeAddress(f"{host} could not be resolved: {exc}") from exc
        if not addresses:
            raise UnsafeAddress(f"{host} has no address")
        refused = [a for a in addresses if not self.permits(a)]
        if refused:
            raise UnsafeAddress(f"{host} resolves to {refused[0]}, a non-public address")
        return [str(a) for a in addresses]

    def check_literal(self, host: str) -> None:
        """The no-DNS part of the check, for validating a URL when it is registered; the host is
        normalised first (ValueError when it cannot be)."""
        host = normalise_host(host)
        literal = literal_address(host)
        if literal is not None and not self.permits(literal):
            raise UnsafeAddress(f"{host} is a non-public address")
        if (
            literal is None
            and (host == "localhost" or host.endswith((".localhost", ".local", ".internal")))
            and not self.allowed
        ):
            raise UnsafeAddress(f"{host} is a local name")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, connecting only to addresses the guard checked."""

    def __init__(self, guard: Guard):
        self.guard = guard
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        *others, last = await self.guard.resolve(host, port)  # never empty: resolve() refuses that
        for address in others:  # the next address when one does not answer; the last one's error stands
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
        return await self.inner.connect_tcp(last, port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise UnsafeAddress("webhooks are not delivered to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_transport(guard: Guard, verify, max_connections: int) -> httpx.AsyncHTTPTransport:
    """An httpx transport (no proxies: they would connect for us) whose connections pass the guard.

    httpx 0.28 takes no network backend, so its pool is rebuilt with one; TLS still checks
    the certificate against the URL's host name, since httpcore passes that as server_hostname."""
    context = ssl_context(verify)
    transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False)
    httpx_internals.use_connection_pool(
        transport,
        httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
            network_backend=GuardedBackend(guard),
        ),
    )
    return transport


def ssl_context(verify: str | bool) -> ssl.SSLContext:
    """True: the system's CAs (certifi's, as httpx); a path: that CA bundle; False: no checks."""
    if verify is True:
        return httpx.create_ssl_context()
    if verify is False:
        return httpx.create_ssl_context(verify=False)
    return ssl.create_default_context(cafile=verify)
