"""Idempotency-Key on POST, PUT, PATCH and DELETE: run a request once, replay its answer to repeats.

app/http/routing.py calls `run_idempotently` after authentication and the scope check, and only
when the header is present. Records live in Redis (storage/redis/idempotency.py), one per
API key and Idempotency-Key. Requirements: one side effect per key under any concurrency;
4xx answers are kept (the same request gets the same answer) but 5xx answers are not (a
retry runs again); a key reused for another request is a conflict with what is stored (409),
never a validation error; and no guarantee, no run: with Redis away the answer is 503.
"""

import hashlib
import logging
import re
from collections.abc import Callable

import orjson
from blacksheep import Content, Response

from app.http.bodies import read_body
from app.http.errors import ConflictError, ValidationFailed, error_response, to_api_error
from storage.errors import Unavailable
from storage.redis.idempotency import BeginOutcome, Begun, IdempotencyStore, StoredResponse, record_key

log = logging.getLogger("sluice.idempotency")

IDEMPOTENCY_KEY = b"idempotency-key"
UNSAFE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
# Visible ASCII (no spaces: HTTP would strip them at the ends), 1 to 255 characters: the spec
# recommends UUIDs (36); 255 admits any client's scheme while bounding what a key costs.
# One declaration for the validator and the OpenAPI document.
KEY_CHARACTERS, KEY_LENGTH_MAX = "!-~", 255
KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": KEY_LENGTH_MAX, "pattern": f"^[{KEY_CHARACTERS}]+$"}
VALID_KEY = re.compile(f"[{KEY_CHARACTERS}]{{1,{KEY_LENGTH_MAX}}}".encode())
REPLAYED = (b"Idempotent-Replayed", b"true")
# The first request of a key is a few Postgres statements: done well within a second.
IN_PROGRESS_RETRY_AFTER = b"1"
# Fields of `data` that hold a secret shown once (API keys on create/rotate, webhook secrets).
SECRET_FIELDS = ("key", "secret")


class IdempotencyKeyReused(ConflictError):
    """The key's stored request differs from this one: the client must pick a new key."""

    code = "idempotency_key_reused"


def idempotency_key(request) -> bytes:
    values = request.get_headers(IDEMPOTENCY_KEY)
    if len(values) != 1 or not VALID_KEY.fullmatch(values[0]):
        message = "The Idempotency-Key header must be one string of 1 to 255 visible ASCII characters (no spaces)."
        raise ValidationFailed({"Idempotency-Key": [message]})
    return values[0]


def fingerprint(method: str, target: bytes, body: bytes) -> str:
    """SHA-256 of the request: method, path with query string, body (newlines keep them apart)."""
    return hashlib.sha256(method.encode() + b"\n" + target + b"\n" + body).hexdigest()


def keepable(response: Response) -> StoredResponse | None:
    """What a repeat should get, or None when the answer must not be kept (5xx, streamed)."""
    if response.status >= 500:
        return None
    content = response.content
    if content is None:
        return StoredResponse(response.status, b"", b"")
    if not isinstance(content.body, bytes):
        return None
    return StoredResponse(response.status, content.type or b"", without_secrets(content.type, content.body))


def without_secrets(content_type: bytes | None, body: bytes) -> bytes:
    """The body with one-time secrets (a new API key, a webhook secret) replaced by null.

    Secrets are stored only as hashes; a replay says the secret was redacted instead of
    keeping it in Redis for a day. The first answer still carries it.
    """
    if not content_type or b"json" not in content_type:
        return body
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict) or not any(isinstance(data.get(f), str) for f in SECRET_FIELDS):
        return body
    for field in SECRET_FIELDS:
        if field in data:
            data[field] = None
    data["secret_redacted"] = True
    return orjson.dumps(document)


def replay(stored: StoredResponse) -> Response:
    content = Content(stored.content_type, stored.body) if stored.content_type else None
    return Response(stored.status, [REPLAYED], content)


def refusal(begun: Begun) -> Exception:
    if begun.outcome is BeginOutcome.MISMATCH:
        return IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request (method, path or body); use a new key."
        )
    error = ConflictError("A request with this Idempotency-Key is still being processed; retry shortly.")
    error.headers = [(b"Retry-After", IN_PROGRESS_RETRY_AFTER)]
    return error


async def run_idempotently(call, handler) -> Response:
    """Run a guarded route's handler once per Idempotency-Key of the calling API key."""
    return await run_keyed(call, handler, lambda key: record_key(call.principal.key_id, key))


async def run_idempotently_in(call, scope: str, handler) -> Response:
    """run_idempotently for a public route, which has no API key to keep records under: they are
    kept per `scope` instead (the pixel's track: the host its events are for, so one site's
    clients never meet another's keys)."""
    scope_digest = hashlib.sha256(scope.encode()).hexdigest()
    # Not an API key id (those are numbers): a public scope's records cannot meet a key's.
    return await run_keyed(
        call, handler, lambda key: f"sluice:idem:{{public:{scope_digest}:{hashlib.sha256(key).hexdigest()}}}"
    )


async def run_keyed(call, handler, record_of: Callable[[bytes], str]) -> Response:
    request = call.request
    key = idempotency_key(request)
    body = await read_body(request, call.settings.max_body_bytes)
    record = record_of(key)
    store = call.services.idempotency
    begun = await store.begin(record, fingerprint(request.method, request.url.value, body))
    if begun.outcome is BeginOutcome.REPLAY:
        return replay(begun.stored)
    if begun.outcome is not BeginOutcome.RUN:
        raise refusal(begun)
    return await run_once(store, record, begun.token, call, handler)


async def run_once(store: IdempotencyStore, record: str, token: str, call, handler) -> Response:
    """Run the handler and keep its answer; a 5xx frees the key instead, so a retry runs again."""
    try:
        response = await handler(call)
    except Exception as exc:
        error = to_api_error(exc)
        if error is None or error.status >= 500:
            await release(store, record, token)
            raise  # the middleware answers it, as without Idempotency-Key
        response = error_response(error, call.context.request_id)
    # A cancelled handler (client gone) ends neither way: its key frees itself after
    # IN_PROGRESS_TTL_MS, since whether its writes committed is unknown.
    stored = keepable(response)
    if stored is None:
        await release(store, record, token)
    else:
        await keep(store, record, token, stored, call.settings.idempotency_ttl_seconds)
    return response


async def keep(store: IdempotencyStore, record: str, token: str, stored: StoredResponse, ttl: int) -> None:
    # The work is done: answer it even if it cannot be kept. A repeat then meets the
    # in-progress marker (409) until that expires.
    try:
        if not await store.complete(record, token, stored, ttl):
            log.warning("idempotency record %s expired while its request ran; answer not kept", record)
    except Unavailable:
        log.warning("Redis unavailable: answer for idempotency record %s not kept", record)


async def release(store: IdempotencyStore, record: str, token: str) -> None:
    try:
        await store.abandon(record, token)
    except Unavailable:
        log.warning("Redis unavailable: idempotency record %s stays in progress until it expires", record)
