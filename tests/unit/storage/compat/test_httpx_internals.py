"""Contract of storage/compat/httpx_internals.py: a real httpx transport sends through the pool it
was given and closes it, against a local HTTPS receiver (no service of the stack needed)."""

import ssl

import httpcore
import httpx
import pytest

from storage.compat import httpx_internals


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, noting every address it is asked to connect to."""

    def __init__(self):
        self.inner = httpcore.AnyIOBackend()
        self.dialled: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.dialled.append((host, port))
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_requests_go_through_the_pool_given_and_it_closes_with_the_transport(https_receiver):
    context = ssl.create_default_context(cafile=https_receiver.ca_path)
    backend = RecordingBackend()
    pool = httpcore.AsyncConnectionPool(ssl_context=context, network_backend=backend)
    transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False)
    httpx_internals.use_connection_pool(transport, pool)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post(https_receiver.url("/compat"), content=b"{}")
        assert response.status_code == 200
        assert backend.dialled == [("127.0.0.1", https_receiver.port)]
        assert len(pool.connections) == 1  # kept alive by our pool, not another
    assert not pool.connections


def test_a_transport_without_the_pool_attribute_is_refused_not_left_unguarded():
    # What an httpx that renamed the attribute would hand over: a transport whose __init__ set no _pool.
    transport = httpx.AsyncHTTPTransport.__new__(httpx.AsyncHTTPTransport)
    with pytest.raises(RuntimeError, match="no _pool"):
        httpx_internals.use_connection_pool(transport, httpcore.AsyncConnectionPool())
