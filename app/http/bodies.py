"""Reading request bodies: size limit first, then content type, then orjson.

How long a client may take to send its body is bounded one layer down, around the ASGI
`receive` (app/http/middleware.py: BodyDeadline).
"""

import logging
import math

import orjson
from blacksheep.exceptions import MessageAborted

from app.http.errors import IncompleteBody, InvalidJson, PayloadTooLarge, UnsupportedContentType, ValidationFailed

log = logging.getLogger("sluice.bodies")
# A refused body is read to its end when it passes the limit by at most this much (see _drain).
DRAIN_MAX_BYTES = 1 << 20


async def read_body(request, max_bytes: int) -> bytes:
    """The raw body, refused with 413 once it is known to pass max_bytes.

    The stream can be read only once, so the body is kept on the request: the
    Idempotency-Key check reads it before the handler does.
    """
    cached = getattr(request, "body_bytes", None)
    if cached is not None:
        return cached
    try:
        request.body_bytes = await _read(request, max_bytes)
    except MessageAborted:
        # The server sees a client that went away mid-body and a chunked body it could not
        # parse the same way (the ASGI server reports both as a disconnect): neither is a
        # server error, and a flood of them must not flood the log.
        log.debug("request body incomplete: client disconnected or sent malformed chunked encoding")
        raise IncompleteBody("The request body ended early or its chunked encoding was malformed.") from None
    return request.body_bytes


async def _read(request, max_bytes: int) -> bytes:
    declared = request.get_first_header(b"content-length")
    # Past 18 digits it is over any limit (and int() refuses strings past 4,300 digits).
    size = (int(declared) if len(declared) <= 18 else math.inf) if declared and declared.isdigit() else 0
    if size > max_bytes:
        if size <= max_bytes + DRAIN_MAX_BYTES:
            await _drain(request.stream(), 0)
        raise PayloadTooLarge(f"Request body is larger than the limit of {max_bytes} bytes.")
    chunks, size = [], 0
    stream = _chunks(request)
    async for chunk in stream:
        size += len(chunk)
        if size > max_bytes:
            await _drain(stream, size - max_bytes)
            raise PayloadTooLarge(f"Request body is larger than the limit of {max_bytes} bytes.")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _chunks(request):
    """The body's chunks straight from the ASGI `receive`, as BlackSheep's stream() yields them
    (without its trailing empty chunk): 3 µs less per request on granian, measured on a bare
    POST (25.6k against 23.8k req/s). Another kind of content (none: no body) goes through stream()."""
    receive = getattr(request.content, "receive", None) if request.content is not None else None
    if receive is None:
        async for chunk in request.stream():
            if chunk:
                yield chunk
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise MessageAborted()
        body = message.get("body")
        if body:
            yield body
        if not message.get("more_body"):
            return


async def _drain(stream, past: int) -> None:
    """Read and drop the rest of a refused body, up to DRAIN_MAX_BYTES past the limit.

    Answering while the client is still sending makes the server close a socket with unread data,
    which the kernel turns into a reset: the client then loses the 413 itself (seen in tests as
    "Server disconnected"). A slightly oversized body is cheaper to read than that; a huge one is not.
    """
    async for chunk in stream:
        past += len(chunk)
        if past > DRAIN_MAX_BYTES:
            return


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def read_json_object(request, max_bytes: int, required: bool = True) -> dict:
    """The body as a JSON object; an absent body is {} when not required."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        if required:
            raise ValidationFailed({"body": ["A JSON object body is required."]})
        return {}
    if not _is_json(request.get_first_header(b"content-type")):
        raise UnsupportedContentType("Content-Type must be application/json.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"Malformed JSON body: {exc}.") from None  # the message carries the detail
    if not isinstance(data, dict):
        raise ValidationFailed({"body": ["The body must be a JSON object."]})
    return data
