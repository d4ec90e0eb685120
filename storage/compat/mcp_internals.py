"""The mcp SDK's private internals, as the MCP gateway's external servers
(app/mcp_servers/external.py) use them.

Talks to no service: it builds the HTTP client the SDK's Streamable HTTP transport then uses.
Contract test: tests/unit/storage/compat/test_mcp_internals.py.
"""

from mcp.shared._httpx_utils import create_mcp_http_client

VERIFIED = {"mcp": "2.3.0"}


def mcp_http_client(headers: dict[str, str] | None = None):
    """An HTTP client for `streamable_http_client(url, http_client=…)` that sends `headers` (an
    entry's own, e.g. Authorization) with the SDK's default timeouts (30 s, 300 s to read).

    Relies on `mcp.shared._httpx_utils.create_mcp_http_client` (mcp 2.3.0), the factory the SDK
    uses when given no client; the transport takes headers only through a client. If it goes,
    importing app/mcp_servers/external.py fails; if its defaults change, long tool calls may time
    out sooner than the gateway's own deadline. The client is the SDK's HTTP library's (httpx2
    in 2.3.0), which Sluice does not depend on directly: hence no annotation here.
    """
    return create_mcp_http_client(headers=headers)
