"""Idempotency-Key parsing, request fingerprints, and which answers the wrapper keeps."""

from types import SimpleNamespace

import pytest
from blacksheep import Request, Response

from app.http.errors import ValidationFailed, json_response
from app.http.idempotency import fingerprint, idempotency_key, keepable, run_once
from storage.errors import Unavailable


def request_with(*values: bytes) -> Request:
    return Request("POST", b"/api/v1/workspaces", [(b"idempotency-key", v) for v in values])


@pytest.mark.parametrize("key", [b"550e8400-e29b-41d4-a716-446655440000", b"k" * 255, b"a-b~!", b"x"])
def test_visible_ascii_keys_up_to_255_are_accepted(key):
    assert idempotency_key(request_with(key)) == key


@pytest.mark.parametrize(
    "values",
    [(b"",), (b"k" * 256,), (b"a\tb",), (b"a b",), (b"a\x01b",), (b"a\x7fb",), ("é".encode(),), (b"one", b"two")],
)
def test_other_keys_are_422_naming_the_header(values):
    with pytest.raises(ValidationFailed) as raised:
        idempotency_key(request_with(*values))
    assert list(raised.value.extra["errors"]) == ["Idempotency-Key"]


def test_fingerprint_covers_method_target_and_body():
    base = fingerprint("POST", b"/api/v1/workspaces", b'{"name":"a"}')
    assert base == fingerprint("POST", b"/api/v1/workspaces", b'{"name":"a"}')
    assert base != fingerprint("PUT", b"/api/v1/workspaces", b'{"name":"a"}')
    assert base != fingerprint("POST", b"/api/v1/workspaces?x=1", b'{"name":"a"}')
    assert base != fingerprint("POST", b"/api/v1/workspaces", b'{"name":"b"}')


@pytest.mark.parametrize("status", [200, 201, 204, 404, 409, 422])
def test_2xx_and_4xx_answers_are_kept(status):
    response = json_response(status, {"a": 1}) if status != 204 else Response(204)
    stored = keepable(response)
    assert stored.status == status
    assert stored.body == (b"" if status == 204 else b'{"a":1}')


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_answers_are_not_kept(status):
    assert keepable(json_response(status, {"error": "x"})) is None


class FakeStore:
    def __init__(self, fail: bool = False):
        self.fail = fail
        self.completed, self.abandoned = [], []

    async def complete(self, key, token, stored, ttl):
        if self.fail:
            raise Unavailable("Redis")
        self.completed.append((key, token, stored, ttl))
        return True

    async def abandon(self, key, token):
        self.abandoned.append((key, token))
        return True


CALL = SimpleNamespace(
    context=SimpleNamespace(request_id="req_test"), settings=SimpleNamespace(idempotency_ttl_seconds=7)
)


def raising(exc: Exception):
    async def handler(call):
        raise exc

    return handler


def answering(response: Response):
    async def handler(call):
        return response

    return handler


async def test_created_answer_is_kept_for_the_ttl():
    store = FakeStore()
    response = await run_once(store, "rec", "tok", CALL, answering(json_response(201, {"id": 1})))
    assert response.status == 201
    [(key, token, stored, ttl)] = store.completed
    assert (key, token, stored.status, stored.body, ttl) == ("rec", "tok", 201, b'{"id":1}', 7)
    assert store.abandoned == []


async def test_raised_4xx_is_kept_as_its_envelope():
    store = FakeStore()
    response = await run_once(store, "rec", "tok", CALL, raising(ValidationFailed({"name": ["Required."]})))
    assert response.status == 422
    [(_, _, stored, _)] = store.completed
    assert stored.status == 422 and b"validation_failed" in stored.body


@pytest.mark.parametrize("exc", [RuntimeError("bug"), Unavailable("Postgres")])
async def test_raised_5xx_frees_the_key_and_propagates(exc):
    store = FakeStore()
    with pytest.raises(type(exc)):
        await run_once(store, "rec", "tok", CALL, raising(exc))
    assert store.abandoned == [("rec", "tok")] and store.completed == []


async def test_returned_5xx_frees_the_key():
    store = FakeStore()
    response = await run_once(store, "rec", "tok", CALL, answering(json_response(502, {"error": "x"})))
    assert response.status == 502
    assert store.abandoned == [("rec", "tok")] and store.completed == []


async def test_answer_is_returned_even_when_it_cannot_be_kept():
    response = await run_once(FakeStore(fail=True), "rec", "tok", CALL, answering(json_response(201, {})))
    assert response.status == 201
