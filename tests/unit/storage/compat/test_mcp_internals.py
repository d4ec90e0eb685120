"""Contract of storage/compat/mcp_internals.py: the client it builds is the kind the SDK's Streamable
HTTP transport takes, with an entry's headers and the SDK's own timeouts. The exchange with a real
server through it is tests/e2e/test_mcp.py's."""

import typing

from mcp.client.streamable_http import streamable_http_client

from storage.compat import mcp_internals


async def test_the_client_is_the_transports_kind_with_the_entrys_headers_and_the_sdks_timeouts():
    client = mcp_internals.mcp_http_client({"Authorization": "Bearer token", "X-Team": "ops"})
    try:
        taken = typing.get_type_hints(streamable_http_client)["http_client"]
        assert isinstance(client, typing.get_args(taken)[0]), (type(client), taken)
        assert client.headers["authorization"] == "Bearer token" and client.headers["x-team"] == "ops"
        # Reads wait no less than the longest gateway deadline (an entry's timeout_seconds, at most 300).
        assert (client.timeout.connect, client.timeout.read) == (30.0, 300.0)
    finally:
        await client.aclose()


async def test_an_entry_without_headers_gets_a_client_all_the_same():
    client = mcp_internals.mcp_http_client(None)
    try:
        assert "authorization" not in client.headers
    finally:
        await client.aclose()
