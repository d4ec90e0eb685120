"""The client's address: the peer, or X-Forwarded-For when the peer is a trusted proxy.

Requirements: a client must not be able to pick its own address (so X-Forwarded-For is
read only from proxies listed in SLUICE_TRUSTED_PROXIES, walking right to left past
them), and the raw address must never be stored: `ip_digest` gives the keyed hash that
limiter keys use.
"""

import hashlib
import ipaddress
import socket
from functools import lru_cache

from blacksheep import Request

from storage.config import Network  # what SLUICE_TRUSTED_PROXIES is parsed into

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _dotted_quad(text: str) -> int | None:
    """A plain IPv4 address ("203.0.113.7"; inet_pton refuses leading zeros and short forms) as an
    int: the common case, in C; anything else is None and goes through the ipaddress module."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        return None


@lru_cache(maxsize=4096)
def _parsed(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket is the same client.
    return address.ipv4_mapped or address if address.version == 6 else address


def _address(text: str) -> tuple[str, int | Address] | None:
    """(canonical text, a value to test against networks), None for what is not an address."""
    text = text.strip().strip("[]")
    number = _dotted_quad(text)
    if number is not None:
        return text, number
    address = _parsed(text)
    return None if address is None else (str(address), address)


@lru_cache(maxsize=64)
def _ipv4_ranges(trusted: tuple[Network, ...]) -> tuple[tuple[int, int], ...]:
    return tuple((int(n.network_address), int(n.broadcast_address)) for n in trusted if n.version == 4)


def _trusted(value: int | Address, trusted: tuple[Network, ...]) -> bool:
    if isinstance(value, int):
        return any(low <= value <= high for low, high in _ipv4_ranges(trusted))
    return any(value in network for network in trusted)


def client_address(peer: str, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The first address, from the right, that is not a trusted proxy."""
    address = _address(peer)
    if address is None:
        return peer
    if not _trusted(address[1], trusted):
        return address[0]
    hops = [h for header in forwarded_for for h in header.split(",")]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            break  # garbage in the chain: stop at the last address we could trust
        address = hop_address
        if not _trusted(address[1], trusted):
            break
    return address[0]


def from_trusted_proxy(peer: str, trusted: tuple[Network, ...]) -> bool:
    """Whether the peer is one of SLUICE_TRUSTED_PROXIES: only then are its headers about the client believed."""
    if not trusted:
        return False
    address = _address(peer)
    return address is not None and _trusted(address[1], trusted)


def request_client_address(request: Request, trusted: tuple[Network, ...]) -> str:
    headers = [h.decode("latin-1") for h in request.get_headers(b"x-forwarded-for")] if trusted else []
    return client_address(request.client_ip, headers, trusted)


def ip_digest(address: str, secret: bytes) -> str:
    """A keyed hash of the address: stable for limiting, useless for recovering the address."""
    return hashlib.blake2b(address.encode(), key=secret, digest_size=16).hexdigest()
