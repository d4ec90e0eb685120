"""The outbound guard: hostile URLs refused in every spelling, allowed networks reached, and the
connection made to the address that was checked."""

import ipaddress

import httpcore
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.webhooks.ssrf import Guard, UnsafeAddress, guarded_transport, is_public, literal_address, normalise_host

HOSTILE_LITERALS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0x7f000001",
    "017700000001",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "0",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "198.18.0.1",
    "192.0.0.8",
    "192.0.2.1",
    "::1",
    "[::1]",
    "::",
    "::ffff:127.0.0.1",
    "[::ffff:7f00:1]",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "2002:7f00:1::",
    "64:ff9b::a9fe:a9fe",
    "2001:db8::1",
    "::127.0.0.1",
]
PUBLIC_LITERALS = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]


@pytest.mark.parametrize("host", HOSTILE_LITERALS)
async def test_hostile_addresses_are_refused_in_every_form(host):
    with pytest.raises(UnsafeAddress):
        await Guard().resolve(host, 443)


@pytest.mark.parametrize("host", PUBLIC_LITERALS)
def test_public_addresses_pass(host):
    assert is_public(literal_address(host))


@pytest.mark.parametrize(
    "host, expected",
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("example.com", None),
        ("deadbeef", None),
        ("1.2.3.4.example", None),
    ],
)
def test_literal_forms_are_read_as_a_resolver_would(host, expected):
    found = literal_address(host)
    assert (str(found) if found else None) == expected


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1.", "127.0.0.1"),
        ("localhost.", "localhost"),
        ("127\u30020\u30020\u30021", "127.0.0.1"),
        ("\u2460\u2461\u2466.0.0.1", "127.0.0.1"),
        ("\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11", "127.0.0.1"),
        ("\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", "localhost"),
        ("LocalHost", "localhost"),
        ("%31%32%37.0.0.1", "127.0.0.1"),
        ("Example.COM.", "example.com"),
        ("b\u00fccher.de", "b\u00fccher.de"),
        ("[::1]", "[::1]"),
        ("example.com..", "example.com."),
    ],
)
def test_hosts_are_normalised_as_browsers_and_resolvers_read_them(host, expected):
    assert normalise_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1.",
        "localhost.",
        "127\u30020\u30020\u30021",
        "\u2460\u2461\u2466.0.0.1",
        "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",
        "api.LOCALHOST.",
        "\uff3b\uff1a\uff1a\uff11\uff3d",
        "169\uff0e254\uff0e169\uff0e254",
        "0x7f\u30021",
        "%31%32%37.1",
    ],
)
def test_the_check_at_registration_refuses_every_spelling_of_a_local_host(host):
    with pytest.raises(UnsafeAddress):
        Guard().check_literal(host)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com.",
        "b\u00fccher.de",
        "8.8.8.8.",
        "[2606:4700:4700::1111]",
    ],
)
def test_the_check_at_registration_lets_public_hosts_through(host):
    Guard().check_literal(host)


@given(st.text())
@settings(max_examples=300)
def test_normalising_any_host_gives_text_or_a_value_error(host):
    try:
        Guard().check_literal(host)
    except (UnsafeAddress, ValueError):
        pass


async def test_localhost_is_refused_after_resolving():
    with pytest.raises(UnsafeAddress, match="non-public"):
        await Guard().resolve("localhost", 443)


async def test_a_name_resolving_to_loopback_is_refused():
    async def resolver(host, port):
        return ["127.0.0.1"]

    with pytest.raises(UnsafeAddress, match="127.0.0.1"):
        await Guard(resolver=resolver).resolve("innocent.example", 443)


async def test_one_private_address_among_public_ones_refuses_the_name():
    async def resolver(host, port):
        return ["93.184.216.34", "10.1.2.3"]

    with pytest.raises(UnsafeAddress):
        await Guard(resolver=resolver).resolve("mixed.example", 443)


async def test_allowed_networks_let_private_addresses_through():
    guard = Guard([ipaddress.ip_network("127.0.0.0/8")])
    assert await guard.resolve("127.0.0.1", 443) == ["127.0.0.1"]
    mapped = await guard.resolve("::ffff:127.0.0.1", 443)
    assert [ipaddress.ip_address(a) for a in mapped] == [ipaddress.ip_address("::ffff:127.0.0.1")]
    with pytest.raises(UnsafeAddress):
        await guard.resolve("10.0.0.1", 443)


async def test_unresolvable_names_are_refused():
    with pytest.raises(UnsafeAddress, match="could not be resolved"):
        await Guard().resolve("no-such-host.invalid", 443)


# Loopback in the spellings a resolver accepts: each would reach the listener on 127.0.0.1 / ::1.
LOOPBACK_HOSTS = ["127.0.0.1", "127.1", "2130706433", "0x7f.1", "[::1]", "[::ffff:127.0.0.1]", "localhost"]
LOOPBACK_ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


async def post(guard: Guard, url: str) -> None:
    async with httpx.AsyncClient(transport=guarded_transport(guard, True, 4)) as client:
        await client.post(url, content=b"{}")


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_requests_through_the_guarded_transport_never_connect(host, listener):
    url = f"https://{host}:{listener.port}/"
    with pytest.raises(UnsafeAddress, match="non-public"):
        await post(Guard(), url)
    assert listener.seen() == [], f"{url} connected"
    # With loopback allowed the same URL does reach the listener (which closes it: no TLS there).
    with pytest.raises(httpx.ConnectError):
        await post(Guard(LOOPBACK_ALLOWED), url)
    assert len(listener.seen()) == 1


@pytest.fixture
def dials(monkeypatch) -> list[tuple[str, int]]:
    """Every TCP connection the guarded backend opens, recorded instead of made."""
    made: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        made.append((host, port))
        raise httpcore.ConnectError("recorded, not connected")

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return made


@pytest.mark.parametrize(
    "url, address",
    [
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("https://[fd00:ec2::254]/latest", "fd00:ec2::254"),
        ("https://10.0.0.1/hook", "10.0.0.1"),
        ("https://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe"),
    ],
)
async def test_addresses_no_listener_can_stand_for_are_refused_before_any_dial(url, address, dials):
    with pytest.raises(UnsafeAddress, match="non-public"):
        await post(Guard(), url)
    assert dials == []
    everything = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    with pytest.raises(httpx.ConnectError):
        await post(Guard(everything), url)
    assert dials == [(address, 443)]


async def test_httpx_itself_refuses_octal_dotted_hosts_and_nothing_connects(listener):
    # 0177.0.0.1 is 127.0.0.1 to inet_aton, but httpx will not parse it: refused before the guard.
    with pytest.raises(httpx.InvalidURL):
        await post(Guard(LOOPBACK_ALLOWED), f"https://0177.0.0.1:{listener.port}/")
    assert listener.seen() == []


async def test_connection_goes_to_the_checked_address_not_a_second_lookup(https_receiver):
    """The resolver is asked once per connection and its answer is what gets dialled: a name the
    system cannot resolve still reaches the receiver, with TLS checked against that name."""
    asked = []

    async def resolver(host, port):
        asked.append(host)
        return ["127.0.0.1"]

    guard = Guard([ipaddress.ip_network("127.0.0.0/8")], resolver=resolver)
    async with httpx.AsyncClient(transport=guarded_transport(guard, https_receiver.ca_path, 4)) as client:
        response = await client.post(f"https://receiver.test:{https_receiver.port}/ok", content=b"{}")
    assert response.status_code == 200 and asked == ["receiver.test"]
