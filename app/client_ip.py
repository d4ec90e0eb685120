"""The client's address: the peer, or X-Forwarded-For when the peer is a trusted proxy.

Requirements: a client must not be able to pick its own address (so X-Forwarded-For is
read only from proxies listed in SLUICE_TRUSTED_PROXIES, walking right to left past
them), and the raw address must never be stored: `ip_digest` gives the keyed hash that
limiter keys use.
"""

import hashlib
import hmac
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`"10.0.0.0/8, 127.0.0.1"` → networks; raises ValueError naming a bad entry."""
    networks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {part!r}")
    return tuple(networks)


def _address(text: str):
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket is the same client.
    return address.ipv4_mapped or address if address.version == 6 else address


def _trusted(address, trusted: tuple[Network, ...]) -> bool:
    return any(address in network for network in trusted)


def client_address(peer: str, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The first address, from the right, that is not a trusted proxy."""
    address = _address(peer)
    if address is None:
        return peer
    if not _trusted(address, trusted):
        return str(address)
    hops = [h for header in forwarded_for for h in header.split(",")]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            break  # garbage in the chain: stop at the last address we could trust
        address = hop_address
        if not _trusted(address, trusted):
            break
    return str(address)


def request_client_address(request, trusted: tuple[Network, ...]) -> str:
    headers = [h.decode("latin-1") for h in request.get_headers(b"x-forwarded-for")] if trusted else []
    return client_address(request.client_ip, headers, trusted)


def ip_digest(address: str, secret: bytes) -> str:
    """A keyed hash of the address: stable for limiting, useless for recovering the address."""
    return hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()[:32]
