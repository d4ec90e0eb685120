"""BodyDeadline: a body read past its deadline ends in RequestTimeout; nothing else is touched."""

import asyncio

import pytest

from app.http.errors import RequestTimeout
from app.http.middleware import BodyDeadline

HTTP = {"type": "http"}


async def read_once(scope, receive, send):
    return await receive()


async def test_body_read_past_its_deadline_ends_in_request_timeout():
    never = asyncio.get_running_loop().create_future()  # a client that stopped sending
    bounded = BodyDeadline(read_once, 0.05)
    with pytest.raises(RequestTimeout) as raised:
        await bounded(HTTP, lambda: never, None)
    assert raised.value.status == 408 and raised.value.body()["error"] == "request_timeout"
    assert asyncio.current_task().cancelling() == 0  # the sweep's cancellation was taken back
    assert not bounded.reading and not bounded.late
    bounded.sweeper.cancel()


async def test_body_arriving_in_time_is_read_unchanged():
    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    bounded = BodyDeadline(read_once, 10)
    assert await bounded(HTTP, receive, None) == {"type": "http.request", "body": b"{}", "more_body": False}
    assert not bounded.reading
    bounded.sweeper.cancel()


async def test_a_request_cancelled_by_someone_else_stays_cancelled():
    never = asyncio.get_running_loop().create_future()
    bounded = BodyDeadline(read_once, 10)
    task = asyncio.get_running_loop().create_task(bounded(HTTP, lambda: never, None))
    while not bounded.reading:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not bounded.reading and not bounded.late
    bounded.sweeper.cancel()
