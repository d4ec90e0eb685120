"""The webhook dispatcher's Prometheus metrics: attempts, the outbox backlog, disabled endpoints,
and the ingest consumer group's lag seen from Kafka (ingest/worker/group_lag.py).

In prometheus_client's default registry, served by the dispatcher on SLUICE_DISPATCHER_METRICS
(storage/telemetry/metrics.py). Only the dispatcher imports this module: the API's test sends go
through the same delivery code but are not counted here. The backlog and the group's lag are
polled (`poll`), a cheap query every POLL_SECONDS rather than work on every pass.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from ingest.webhooks.delivery import AttemptOutcome, Result
from storage.postgres.webhooks import Backlog

log = logging.getLogger("sluice.webhooks")

# Prometheus scrapes every 15 s or so by default: fresher values would not be seen.
POLL_SECONDS = 15.0
# An attempt is cut at SLUICE_WEBHOOK_TIMEOUT_SECONDS (30 s by default).
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

BACKLOG = Gauge(
    "sluice_webhook_outbox_backlog", "Deliveries due now or waiting for a retry (not delivered, not given up)"
)
OLDEST_DUE = Gauge("sluice_webhook_outbox_oldest_due_seconds", "Age of the oldest due delivery (0 when none is due)")
ATTEMPTS = Counter("sluice_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"])
ATTEMPT_DURATION = Histogram(
    "sluice_webhook_attempt_duration_seconds", "Duration of a webhook delivery attempt", buckets=ATTEMPT_BUCKETS
)
ENDPOINTS_DISABLED = Counter(
    "sluice_webhook_endpoints_disabled_total", "Webhook endpoints the dispatcher disabled (410, or failing too long)"
)
GROUP_LAG = Gauge(
    "sluice_kafka_consumer_group_lag_records",
    "Records of the ingest topics not yet committed by the ingest consumer group (Kafka end offset - committed)",
    ["group", "topic", "partition"],
)


def declare() -> None:
    """Every outcome at zero from the start, so a ratio of outcomes exists before the first failure."""
    for outcome in AttemptOutcome:
        ATTEMPTS.labels(outcome)


def attempted(result: Result) -> None:
    ATTEMPTS.labels(result.outcome).inc()
    ATTEMPT_DURATION.observe(result.duration_ms / 1000)


def backlog(measured: Backlog, now: datetime) -> None:
    BACKLOG.set(measured.deliveries)
    due = measured.oldest_due
    OLDEST_DUE.set(max((now - due).total_seconds(), 0.0) if due is not None else 0.0)


class GroupLagGauge:
    """The group's lag per partition; a partition gone from the topics loses its series."""

    def __init__(self, group: str):
        self.group = group
        self.shown: set[tuple[str, str]] = set()

    def set(self, lag: dict[tuple[str, int], int]) -> None:
        now = {(topic, str(partition)): n for (topic, partition), n in lag.items()}
        for topic, partition in self.shown - now.keys():
            GROUP_LAG.remove(self.group, topic, partition)
        for (topic, partition), n in now.items():
            GROUP_LAG.labels(self.group, topic, partition).set(n)
        self.shown = set(now)


async def poll(what: str, measure: Callable[[], Awaitable[None]], stopping: asyncio.Event, every: float) -> None:
    """`measure()` now and every `every` seconds until `stopping`; a failure is logged once per streak,
    and the gauges keep their last values meanwhile."""
    failing = False
    while not stopping.is_set():
        try:
            await measure()
            if failing:
                log.info("measuring the %s again", what)
            failing = False
        except Exception as exc:  # noqa: BLE001 - Postgres or Kafka away: the next poll tries again
            if not failing:
                log.warning("cannot measure the %s (%s); retrying every %.0f s", what, exc, every)
            failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)
