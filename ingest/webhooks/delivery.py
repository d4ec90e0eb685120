"""One webhook attempt: sign, POST through the SSRF guard, time it, keep the start of the answer.

Used by the dispatcher and by the API's POST /webhooks/{id}/test, so both send the same way.
Success is a 2xx only; redirects are not followed (a 3xx is a failure, as Standard Webhooks
senders do: following one would let a receiver point deliveries anywhere).
"""

import asyncio
import enum
import time
from dataclasses import dataclass
from datetime import datetime

import httpx

from ingest.webhooks.signing import signed_headers
from ingest.webhooks.ssrf import Guard, UnsafeAddress, guarded_transport
from storage.config import WebhooksConfig

# The receiver's answer is stored and shown up to this many bytes (UTF-8, cut at a character).
RESPONSE_BODY_LIMIT = 4096
USER_AGENT = "Sluice-Webhooks/1.0"


class AttemptOutcome(enum.StrEnum):
    """How an attempt ended, for `sluice_webhook_attempts_total{outcome}`."""

    DELIVERED = "delivered"  # a 2xx
    FAILED = "failed"  # another status, or the connection failed
    REFUSED = "refused"  # the SSRF guard kept the request from leaving
    TIMEOUT = "timeout"  # no whole answer within the timeout


@dataclass(frozen=True)
class Result:
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int
    started_at: datetime
    retry_after: str | None = None
    outcome: AttemptOutcome = AttemptOutcome.FAILED

    @property
    def success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def create_client(config: WebhooksConfig, guard: Guard | None = None) -> httpx.AsyncClient:
    guard = guard or Guard(config.allowed_networks)
    transport = guarded_transport(guard, config.verify, config.concurrency)
    return httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, timeout=httpx.Timeout(config.timeout_seconds)
    )


async def _read_start(response: httpx.Response) -> str:
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= RESPONSE_BODY_LIMIT:
            break
    return bytes(kept[:RESPONSE_BODY_LIMIT]).decode("utf-8", "ignore")


async def attempt(
    client: httpx.AsyncClient,
    url: str,
    event_id: str,
    body: str,
    secrets: tuple[str, ...],
    now: datetime,
    timeout: float,
) -> Result:
    """POST the signed body once; never raises for anything the receiver or the network does."""
    payload = body.encode()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signed_headers(secrets, event_id, int(now.timestamp()), payload),
    }
    started = time.monotonic()
    status = text = error = retry_after = None
    outcome = AttemptOutcome.FAILED
    try:
        # httpx times each phase apart; the spec's 30 s bounds the whole exchange.
        async with asyncio.timeout(timeout):
            async with client.stream("POST", url, content=payload, headers=headers) as response:
                status, retry_after = response.status_code, response.headers.get("retry-after")
                text = await _read_start(response)
    except (TimeoutError, httpx.TimeoutException):
        error, outcome = "Connection timeout", AttemptOutcome.TIMEOUT
    except UnsafeAddress as exc:
        error, outcome = f"Refused by the SSRF guard: {exc}", AttemptOutcome.REFUSED
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if status is not None and not 200 <= status < 300 and error is None:
        error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    if status is not None and 200 <= status < 300:
        outcome = AttemptOutcome.DELIVERED
    elapsed = round((time.monotonic() - started) * 1000)
    return Result(status, text, error, elapsed, now, retry_after, outcome)
