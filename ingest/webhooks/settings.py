"""The webhook dispatcher's configuration (and the API's for POST /webhooks/{id}/test), read from
SLUICE_WEBHOOK_* environment variables; README lists them."""

import ipaddress
import os
from dataclasses import dataclass

from ingest.settings import env_int

DEFAULT_DATABASE_URL = "postgresql://sluice@127.0.0.1:5432/sluice"


def _networks(raw: str) -> tuple:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SystemExit(f"configuration error: SLUICE_WEBHOOK_ALLOWED_NETWORKS: {exc}")


def _verify(raw: str) -> str | bool:
    if raw.lower() in ("", "1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    return raw  # a CA bundle (PEM file) to trust instead of the system's


@dataclass(frozen=True)
class WebhookSettings:
    database_url: str = DEFAULT_DATABASE_URL
    # The spec's limit; a receiver should answer at once and do its work afterwards.
    timeout_seconds: float = 30.0
    # Sends in flight per worker, and per endpoint within it: a slow endpoint holds at most
    # its share and never the others' (each send is mostly waiting, so 64 costs little).
    concurrency: int = 64
    per_endpoint_concurrency: int = 4
    # Private ranges that may be reached anyway (CIDRs, comma-separated). Empty: none.
    allowed_networks: tuple = ()
    # True (system CAs), False (no verification: never in production) or a CA bundle path.
    verify: str | bool = True
    # A claimed delivery not finished within the lease is claimed again: > timeout + margin.
    lease_seconds: int = 60
    poll_seconds: float = 0.5
    # Disable an endpoint that has failed this many attempts in a row over at least this long.
    disable_after_failures: int = 10
    disable_after_hours: float = 24.0
    outbox_keep_days: int = 7
    log_level: str = "info"

    @classmethod
    def from_env(cls) -> "WebhookSettings":
        env, base = os.environ, cls()
        return cls(
            database_url=env.get("DATABASE_URL", base.database_url),
            timeout_seconds=float(env.get("SLUICE_WEBHOOK_TIMEOUT_SECONDS", base.timeout_seconds)),
            concurrency=env_int("SLUICE_WEBHOOK_CONCURRENCY", base.concurrency),
            per_endpoint_concurrency=env_int("SLUICE_WEBHOOK_PER_ENDPOINT_CONCURRENCY", base.per_endpoint_concurrency),
            allowed_networks=_networks(env.get("SLUICE_WEBHOOK_ALLOWED_NETWORKS", "")),
            verify=_verify(env.get("SLUICE_WEBHOOK_CA_BUNDLE", "")),
            lease_seconds=env_int("SLUICE_WEBHOOK_LEASE_SECONDS", base.lease_seconds),
            poll_seconds=float(env.get("SLUICE_WEBHOOK_POLL_SECONDS", base.poll_seconds)),
            disable_after_failures=env_int("SLUICE_WEBHOOK_DISABLE_AFTER_FAILURES", base.disable_after_failures),
            disable_after_hours=float(env.get("SLUICE_WEBHOOK_DISABLE_AFTER_HOURS", base.disable_after_hours)),
            outbox_keep_days=env_int("SLUICE_WEBHOOK_OUTBOX_KEEP_DAYS", base.outbox_keep_days),
            log_level=env.get("SLUICE_LOG_LEVEL", base.log_level),
        )
