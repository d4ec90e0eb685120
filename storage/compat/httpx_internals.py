"""httpx's private internals, as the outbound guard (ingest/webhooks/ssrf.py) uses them.

Talks to no service: it only rewires a transport before its first request.
Contract test: tests/unit/storage/compat/test_httpx_internals.py (a real transport, a local server).
"""

import httpcore
import httpx

VERIFIED = {"httpx": "0.28.1", "httpcore": "1.0.9"}


def use_connection_pool(transport: httpx.AsyncHTTPTransport, pool: httpcore.AsyncConnectionPool) -> None:
    """Make `transport` send every request through `pool`, and close `pool` when it closes.

    Relies on `AsyncHTTPTransport._pool` (httpx 0.28.1: the httpcore pool that
    `handle_async_request` and `aclose` use), because httpx takes no network backend and the
    SSRF guard is one. If httpx stopped using that attribute, requests would connect without
    the guard, silently: so a transport without it is refused here, and the contract test checks
    that requests really go through the pool.
    """
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError(
            f"httpx {httpx.__version__}: AsyncHTTPTransport has no _pool to replace; "
            "see storage/compat/httpx_internals.py"
        )
    transport._pool = pool
