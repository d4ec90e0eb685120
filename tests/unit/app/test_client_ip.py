"""Client address resolution: X-Forwarded-For only through trusted proxies."""

from hypothesis import given
from hypothesis import strategies as st

from app.http.client_ip import client_address, ip_digest
from storage.config import Networks

PROXIES = Networks()("10.0.0.0/8, 127.0.0.1, ::1")  # as SLUICE_TRUSTED_PROXIES is read


def test_untrusted_peer_is_the_client_whatever_it_claims():
    assert client_address("203.0.113.9", ["1.2.3.4"], PROXIES) == "203.0.113.9"


def test_trusted_proxy_passes_the_forwarded_client():
    assert client_address("10.1.2.3", ["198.51.100.7"], PROXIES) == "198.51.100.7"


def test_spoofed_left_entries_are_ignored():
    # The client sent "1.1.1.1" itself; our proxy appended the real peer.
    assert client_address("10.0.0.5", ["1.1.1.1, 198.51.100.7"], PROXIES) == "198.51.100.7"


def test_chain_of_trusted_proxies_is_walked():
    assert client_address("127.0.0.1", ["198.51.100.7, 10.9.9.9", "10.0.0.2"], PROXIES) == "198.51.100.7"


def test_garbage_hop_stops_the_walk():
    assert client_address("10.0.0.1", ["198.51.100.7, not-an-ip"], PROXIES) == "10.0.0.1"


def test_ipv4_mapped_ipv6_is_normalised():
    assert client_address("::ffff:203.0.113.9", [], PROXIES) == "203.0.113.9"


def test_no_trusted_proxies_means_header_is_never_read():
    assert client_address("10.0.0.1", ["198.51.100.7"], ()) == "10.0.0.1"


@given(st.ip_addresses())
def test_digest_is_stable_and_hides_the_address(address):
    text = str(address)
    digest = ip_digest(text, b"secret")
    assert digest == ip_digest(text, b"secret") and text not in digest and len(digest) == 32
    assert digest != ip_digest(text, b"other secret")
