"""The one table from exception to HTTP status and the spec's error envelope."""

import logging

import orjson
from blacksheep import Content, Response

from ingest.handoff.producer import SpoolFull
from storage.errors import Conflict, NotFound, Unavailable

log = logging.getLogger("sluice.errors")
JSON = b"application/json"


class ApiError(Exception):
    """An error with a status and an envelope the client can act on."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: list[tuple[bytes, bytes]] = []

    def body(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class InvalidJson(ApiError):
    status, code = 400, "invalid_json"


class UnsupportedContentType(ApiError):
    status, code = 400, "unsupported_content_type"


class ValidationFailed(ApiError):
    status, code = 422, "validation_failed"

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("The given data was invalid.", errors=errors)


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "Invalid or missing API key."):
        super().__init__(message)
        self.headers = [(b"WWW-Authenticate", b'Bearer realm="sluice"')]


class AccessDenied(ApiError):
    status, code = 403, "access_denied"


class FeatureLimitReached(ApiError):
    status, code = 403, "feature_limit_reached"

    def __init__(self, feature: str, upgrade_url: str):
        super().__init__("You have reached your limit for this feature.", feature=feature, upgrade_url=upgrade_url)


class ResourceNotFound(ApiError):
    status, code = 404, "not_found"

    def __init__(self, message: str = "Resource not found."):
        super().__init__(message)


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"

    def __init__(self, allowed: list[str]):
        super().__init__(f"Method not allowed. Allowed: {', '.join(allowed)}.")
        self.headers = [(b"Allow", ", ".join(allowed).encode())]


class OriginNotAllowed(ApiError):
    status, code = 403, "origin_not_allowed"


class UnknownDomain(ApiError):
    status, code = 403, "unknown_domain"

    def __init__(self, host: str):
        super().__init__(
            f"The host {host!r} is not registered for pixel tracking; register it with POST /api/v1/pixel/domains.",
            host=host,
        )


class DomainNotVerified(ApiError):
    """Unverified claims of several workspaces meet on the host (app/pixel/sites.py): nobody gets it."""

    status, code = 403, "domain_not_verified"

    def __init__(self, host: str):
        super().__init__(
            f"The host {host!r} is claimed by more than one workspace and none has verified it; "
            "its events are refused until its owner verifies the domain with "
            "POST /api/v1/pixel/domains/{id}/verify.",
            host=host,
        )


class VerificationFailed(ApiError):
    """POST /pixel/domains/{id}/verify found no token; `checks` says what was looked up and found."""

    status, code = 409, "verification_failed"


class ConflictError(ApiError):
    status, code = 409, "conflict"


class IncompleteBody(ApiError):
    """A body that ended early or broke its chunked framing: the client's fault, never logged as an error."""

    status, code = 400, "bad_request"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"

    def __init__(self, seconds: float):
        super().__init__(f"The request body did not arrive within {seconds:g} seconds.")
        self.headers = [(b"Connection", b"close")]


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class RateLimited(ApiError):
    status, code = 429, "rate_limit_exceeded"

    def __init__(self, retry_after: int, limit: int, reset_at: str):
        super().__init__(
            f"Too many requests. Please retry after {retry_after} seconds.",
            retry_after=retry_after,
            limit=limit,
            remaining=0,
            reset_at=reset_at,
        )


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


class BadGateway(ApiError):
    status, code = 502, "bad_gateway"


class GatewayTimeout(ApiError):
    status, code = 504, "gateway_timeout"


def json_response(status: int, body, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, headers, Content(JSON, orjson.dumps(body)))


def to_api_error(exc: Exception) -> ApiError | None:
    """Translate a lower layer's exception; None means it is a bug (answered as 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotFound):
        return ResourceNotFound()
    if isinstance(exc, Conflict):
        # A value valid in itself that the stored state refuses (a slug taken): 409, and the field
        # named in `errors` as a 422 would, so a form can show it by the field.
        if exc.field:
            return ConflictError(str(exc), errors={exc.field: [str(exc)]})
        return ConflictError(str(exc))
    if isinstance(exc, Unavailable):
        error = ServiceUnavailable(f"{exc.service} is unavailable; retry shortly.")
        error.headers = [(b"Retry-After", b"5")]
        return error
    if isinstance(exc, SpoolFull):
        error = ServiceUnavailable("Kafka is unreachable and this server's event spool is full; retry later.")
        error.headers = [(b"Retry-After", str(exc.retry_after).encode())]
        return error
    if isinstance(exc, OSError):
        # Connection refused, reset or timed out on the way to a dependency (Postgres while
        # it restarts): the request may succeed on retry, so 503 rather than a 500.
        error = ServiceUnavailable("A service Sluice depends on is unavailable; retry shortly.")
        error.headers = [(b"Retry-After", b"5")]
        return error
    return None


def error_response(exc: Exception, request_id: str) -> Response:
    error = to_api_error(exc)
    if error is None:
        log.exception("unhandled error, request_id=%s", request_id)
        body = {"error": "server_error", "message": "An unexpected error occurred.", "request_id": request_id}
        return json_response(500, body)
    return json_response(error.status, error.body(), list(error.headers))
