"""The webhook dispatcher: outbox → deliveries → signed POSTs, retried on a schedule.

Runs as `python -m ingest.webhooks.dispatcher`, a worker apart from the API; start as many as needed.
Each pass fans new outbox events out into deliveries (storage/postgres/outbox.py), leases the
deliveries that are due and sends them, at most `concurrency` at a time and at most
`per_endpoint_concurrency` to one endpoint, so a slow or dead endpoint holds only its own
share. Time comes from an injectable clock: tests move it instead of sleeping.

Its /metrics (SLUICE_DISPATCHER_METRICS; ingest/webhooks/metrics.py) also carry the ingest
consumer group's lag as Kafka sees it: this process outlives the workers whose lag it reports.
When tracing is on (OTEL_*; storage/telemetry/tracing.py) each attempt has a delivery span, the
root of its own trace: the outbox row does not keep the API request's traceparent.
"""

import asyncio
import logging
import os
import random
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import uvloop

from ingest.events import Topics
from ingest.webhooks import delivery, metrics
from ingest.webhooks.retry_schedule import RETRY_AFTER_STATUSES, next_attempt_at, parse_retry_after
from ingest.worker.group_lag import GroupLag
from storage.config import Config, WebhooksConfig, load_or_exit
from storage.postgres import outbox, webhooks
from storage.postgres.pool import create_pool
from storage.postgres.webhooks import Claimed, DeliveryStatus, DisableReason, Outcome
from storage.telemetry import logs, tracing
from storage.telemetry import metrics as telemetry

log = logging.getLogger("sluice.webhooks")
Clock = Callable[[], datetime]
# Events fanned out per transaction: a few hundred keeps each one short.
FAN_OUT_BATCH = 500
# On SIGTERM, sends in flight get this long to finish; the rest are retried after their lease.
STOP_DEADLINE_SECONDS = 10
# Prune the outbox about once every this many idle polls.
PRUNE_EVERY_POLLS = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


def decide(claimed: Claimed, result: delivery.Result, rng: random.Random) -> Outcome:
    """What follows an attempt: success, a retry on the schedule, or failure (410: and disable)."""
    status = DeliveryStatus.SUCCESS if result.success else DeliveryStatus.RETRYING
    next_at, disable = None, None
    if not result.success:
        retry_after = None
        if result.status_code in RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(result.retry_after, result.started_at)
        next_at = next_attempt_at(claimed.attempt + 1, result.started_at, retry_after, rng)
        if result.status_code == 410:
            next_at, disable = None, DisableReason.GONE
        if next_at is None:
            status = DeliveryStatus.FAILED
    return Outcome(
        status,
        result.status_code,
        result.response_body,
        result.error,
        result.duration_ms,
        result.started_at,
        next_at,
        disable,
    )


class Dispatcher:
    def __init__(
        self,
        pool,
        config: WebhooksConfig,
        client: httpx.AsyncClient,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ):
        self.pool, self.config, self.client, self.clock = pool, config, client, clock
        self.rng = rng or random.Random()
        self.in_flight: dict[int, int] = {}  # endpoint id → sends in progress
        self.tasks: set[asyncio.Task] = set()
        self.sent = 0

    async def fan_out(self) -> int:
        """Turn every waiting outbox event into deliveries; returns the deliveries made."""
        made = 0
        while True:
            events, deliveries = await outbox.fan_out(self.pool, self.clock(), FAN_OUT_BATCH)
            made += deliveries
            if events < FAN_OUT_BATCH:
                return made

    async def claim(self, limit: int) -> list[Claimed]:
        lease = timedelta(seconds=self.config.lease_seconds)
        return await webhooks.claim_due(
            self.pool, self.clock(), lease, limit, self.config.per_endpoint_concurrency, self.in_flight
        )

    async def send(self, claimed: Claimed) -> Outcome:
        with tracing.delivery_span(claimed.endpoint_id, claimed.event_id, claimed.attempt + 1) as span:
            result = await delivery.attempt(
                self.client,
                claimed.url,
                claimed.event_id,
                claimed.body,
                claimed.secrets,
                self.clock(),
                self.config.timeout_seconds,
            )
            tracing.delivered(span, result.status_code, result.error)
        metrics.attempted(result)
        outcome = decide(claimed, result, self.rng)
        disabled = await webhooks.record_outcome(
            self.pool,
            claimed,
            outcome,
            self.config.disable_after_failures,
            timedelta(hours=self.config.disable_after_hours),
        )
        if disabled:
            metrics.ENDPOINTS_DISABLED.inc()
            log.warning("webhook endpoint %d disabled: %s", claimed.endpoint_id, disabled)
        self.sent += 1
        return outcome

    async def measure_backlog(self) -> None:
        now = self.clock()
        metrics.backlog(await webhooks.backlog(self.pool, now), now)

    def start_send(self, claimed: Claimed) -> None:
        self.in_flight[claimed.endpoint_id] = self.in_flight.get(claimed.endpoint_id, 0) + 1
        task = asyncio.create_task(self.send(claimed))
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, claimed.endpoint_id))

    def _done(self, task: asyncio.Task, endpoint_id: int) -> None:
        self.tasks.discard(task)
        self.in_flight[endpoint_id] -= 1
        if not self.in_flight[endpoint_id]:
            del self.in_flight[endpoint_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook send failed; its lease will run out and it is tried again", exc_info=task.exception())

    async def run_once(self) -> int:
        """One pass, to completion: fan out, send everything due now, wait. Returns sends made."""
        await self.fan_out()
        before = self.sent
        while claimed := await self.claim(self.config.concurrency - len(self.tasks)):
            for item in claimed:
                self.start_send(item)
            await asyncio.wait(set(self.tasks))
        return self.sent - before

    async def run(self, stopping: asyncio.Event) -> None:
        idle = 0
        while not stopping.is_set():
            try:
                claimed = await self._step()
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                # Postgres away (a restart): nothing is lost, the outbox and leases wait for us.
                log.warning("webhook dispatcher cannot reach Postgres (%s); retrying", exc)
                claimed = 0
            if not claimed:
                idle += 1
                if idle % PRUNE_EVERY_POLLS == 0:
                    await outbox.prune(self.pool, self.config.outbox_keep_days)
                await self._pause(stopping)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=STOP_DEADLINE_SECONDS)

    async def _step(self) -> int:
        await self.fan_out()
        free = self.config.concurrency - len(self.tasks)
        claimed = await self.claim(free) if free > 0 else []
        for item in claimed:
            self.start_send(item)
        return len(claimed)

    async def _pause(self, stopping: asyncio.Event) -> None:
        wake: list[asyncio.Future] = [asyncio.ensure_future(stopping.wait())]
        if self.tasks:  # a finished send frees a slot: look for more work at once
            wake.append(asyncio.ensure_future(asyncio.wait(set(self.tasks), return_when=asyncio.FIRST_COMPLETED)))
        _, pending = await asyncio.wait(wake, timeout=self.config.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()


def group_lag(config: Config) -> tuple[GroupLag, metrics.GroupLagGauge]:
    """What measures the ingest consumer group's lag, and the gauge it feeds."""
    group, topics = config.worker.consumer_group, Topics.with_prefix(config.shared.kafka_topic_prefix).ingested()
    return GroupLag(config.shared.kafka_bootstrap_servers, group, topics), metrics.GroupLagGauge(group)


async def serve(config: Config) -> None:
    metrics.declare()
    telemetry.start("dispatcher", "SLUICE_DISPATCHER_METRICS", config.webhooks.dispatcher_metrics)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    pool = await create_pool(config.shared.database_url, max_size=4)
    client = delivery.create_client(config.webhooks)
    lag, lag_gauge = group_lag(config)
    try:
        log.info(
            "webhook dispatcher started (concurrency %d, %d per endpoint)",
            config.webhooks.concurrency,
            config.webhooks.per_endpoint_concurrency,
        )
        dispatcher = Dispatcher(pool, config.webhooks, client)

        async def measure_lag() -> None:
            lag_gauge.set(await lag.measure())

        every = metrics.POLL_SECONDS
        async with asyncio.TaskGroup() as polls:  # the polls end with the dispatcher, whichever way it ends
            polls.create_task(metrics.poll("outbox backlog", dispatcher.measure_backlog, stopping, every))
            polls.create_task(metrics.poll(f"lag of consumer group {lag.group}", measure_lag, stopping, every))
            await dispatcher.run(stopping)
    finally:
        await lag.close()
        await client.aclose()
        await pool.close()


def main() -> None:
    config = load_or_exit(os.environ)
    logs.setup("dispatcher", config.shared)
    tracing.setup("dispatcher")
    uvloop.run(serve(config))


if __name__ == "__main__":
    main()
