"""The one middleware every request passes: request id in, errors out as envelopes."""

import os
import re

from app.errors import error_response

# Echo a caller's id only if it is short and plain, so it cannot inject into logs or headers.
SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return "req_" + os.urandom(8).hex()


async def request_middleware(request, handler):
    incoming = request.get_first_header(b"x-request-id")
    if incoming is not None and SANE_REQUEST_ID.match(incoming):
        request_id = incoming.decode()
    else:
        request_id = new_request_id()
    request.request_id = request_id
    request.extra_headers = None  # set by the auth wrapper: rate-limit headers
    try:
        response = await handler(request)
    except Exception as exc:  # noqa: BLE001 - every error leaves as an envelope, never a bare 500
        response = error_response(exc, request_id)
    response.set_header(b"X-Request-ID", request_id.encode())
    if request.extra_headers:
        for name, value in request.extra_headers:
            response.set_header(name, value)
    return response
