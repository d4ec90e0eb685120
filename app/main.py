"""Assembles the application: configuration, pools, routes, middleware, lifespan."""

import gc
import os
from collections.abc import AsyncIterator

import asyncpg
from blacksheep import Application
from blacksheep.server.routing import Router
from redis.asyncio import Redis

from app.access.auth import Authenticator
from app.access.rate_limits import FailedAuthLimit, LocalLimiter, RedisHealth
from app.http import health, metrics, openapi
from app.http.metrics import Exposition
from app.http.middleware import UNMATCHED, BodyDeadline, observed
from app.http.routing import Route, Services, ServicesHolder, endpoint, fallback
from app.mcp_servers import analytics
from app.pixel import domains
from app.pixel import track as pixel
from app.pixel.intake import Pixel
from app.resources import api_keys, entitlements, mcp, seo, stats, webhooks, workspaces
from app.resources.ledger import Ledger
from ingest.events import Topics
from ingest.handoff.producer import DurableProducer
from storage.config import ApiConfig, Config, load_or_exit
from storage.postgres.pool import create_pool
from storage.postgres.workspace_cache import WorkspaceCache
from storage.redis.client import close_client, create_client
from storage.redis.idempotency import IdempotencyStore
from storage.redis.key_gate import KeyGate
from storage.telemetry import logs, tracing
from storage.telemetry import metrics as telemetry
from storage.telemetry.metrics import ApiMetrics


def api_routes(config: Config | None = None, exposition: Exposition | None = None) -> list[Route]:
    """Every route of the API; tests read this table to check each one's scope. With the
    configuration, the document also shows each built-in MCP tool's arguments; without an
    exposition, /metrics answers 404 (SLUICE_METRICS=off)."""
    routes = (
        health.ROUTES
        + metrics.routes(exposition)
        + workspaces.ROUTES
        + api_keys.ROUTES
        + entitlements.ROUTES
        + seo.ROUTES
        + mcp.routes(config)
    )
    routes += pixel.ROUTES + domains.ROUTES + stats.ROUTES + webhooks.ROUTES
    return routes + openapi.routes_for(routes)


def configure_routes(
    router: Router, holder: ServicesHolder, config: Config | None = None, exposition: Exposition | None = None
) -> list[Route]:
    """Each route's endpoint behind observed() (app/http/middleware.py), which names it by its template."""
    routes = api_routes(config, exposition)
    # Served, not documented: the pixel's first-party aliases (SLUICE_PIXEL_PATH) of documented routes.
    served = routes + (pixel.first_party_routes(config.api.pixel_path) if config is not None else [])
    observations = exposition.metrics if exposition is not None else None
    for route in served:
        router.add(route.method, route.path, observed(route.path, endpoint(route, holder), observations))
    router.fallback = observed(UNMATCHED, fallback(served, holder), observations)
    return routes


def create_producer(config: Config, topics: Topics, metrics: ApiMetrics | None = None) -> DurableProducer:
    api = config.api
    return DurableProducer(
        config.shared.kafka_bootstrap_servers,
        str(api.spool_dir),
        linger_ms=api.kafka_linger_ms,
        batch_bytes=api.kafka_batch_bytes,
        ack_deadline_ms=api.kafka_ack_deadline_ms,
        spool_max_bytes=api.spool_max_bytes,
        partitions=config.shared.kafka_partitions,
        topics=(topics.pixel, topics.usage, topics.dropped, topics.dead_letter),
        metrics=metrics,
    )


def create_authenticator(
    api: ApiConfig, pool: asyncpg.Pool, redis: Redis, metrics: ApiMetrics | None = None
) -> Authenticator:
    health = RedisHealth(metrics=metrics)  # the process's one view of Redis: the pixel shares it
    local = LocalLimiter(api.workers) if api.rate_limits else None
    failures = (
        FailedAuthLimit(redis, health, api.auth_failures_per_minute, api.workers, api.trusted_proxies)
        if api.auth_failures_per_minute > 0
        else None
    )
    return Authenticator(pool, KeyGate(redis, api.rate_limits), local, api.last_used_flush_seconds, health, failures)


def configure_lifespan(
    app: Application, config: Config, topics: Topics, holder: ServicesHolder, exposition: Exposition | None = None
) -> None:
    """Starts the pools, clients and producer, then sets the Services built from them on `holder`."""
    shared, api = config.shared, config.api
    metrics = exposition.metrics if exposition is not None else None

    @app.lifespan
    async def resources() -> AsyncIterator[None]:
        registry = mcp.create_registry(config)  # first: a bad registry file stops the start cleanly
        pool = await create_pool(shared.database_url, api.pg_pool_size)
        workspace_cache = WorkspaceCache(pool, shared.database_url, api.workspace_cache_seconds)
        await workspace_cache.start()
        redis = create_client(shared.redis_url)
        analytics.connect_servers(registry, pool, redis, workspace_cache)
        authenticator = create_authenticator(api, pool, redis, metrics)
        authenticator.start()  # also PINGs Redis while it is marked down
        producer = create_producer(config, topics, metrics)
        await producer.start()  # never waits long for Kafka: it spools meanwhile
        intake = Pixel(config, pool, redis, producer, authenticator.health, metrics)
        holder.services = Services(
            config,
            topics,
            pool,
            redis,
            authenticator,
            sink=producer,  # handlers see only the Sink protocol (ingest/handoff/sink.py)
            mcp=registry,
            idempotency=IdempotencyStore(redis),
            entitlements=Ledger(pool, redis, producer, topics.usage, api.entitlements_cache_seconds),
            pixel=intake,
            workspaces=workspace_cache,
        )
        intake.start()
        if exposition is not None:
            exposition.start(pool, redis, producer, authenticator.health)
        tune_gc()
        try:
            yield
        finally:
            if exposition is not None:
                await exposition.stop()
            await intake.stop()  # its last drop counts go out with the producer's flush
            await producer.stop()  # flushes to Kafka, or leaves the rest in the spool
            await authenticator.stop()
            await workspace_cache.stop()
            await close_client(redis)
            await pool.close()


def tune_gc() -> None:
    """Move everything start-up made out of the collector's sight.

    Full collections otherwise walk every long-lived object (pools, clients, the route table:
    ~36 ms a pass) while requests wait: with it, pixel/track's p99 went from 59-64 ms to 15 ms at
    saturation and throughput up ~5% (bench/pixel_e2e.py's load, 64 connections).
    """
    gc.collect()
    gc.freeze()


def create_app(config: Config | None = None) -> BodyDeadline:
    """The ASGI application granian serves (`app.main:create_app`: configured from the environment),
    BlackSheep's inside the body read deadline."""
    config = config or load_or_exit(os.environ)
    logs.setup("api", config.shared)
    tracing.setup("api")  # off unless OTEL_* says otherwise; in each granian worker, after the fork
    holder = ServicesHolder()
    exposition = create_exposition() if config.api.metrics else None
    app = build_application(holder, config, exposition)
    configure_lifespan(app, config, Topics.with_prefix(config.shared.kafka_topic_prefix), holder, exposition)
    return BodyDeadline(app, config.api.body_timeout_seconds)


def create_exposition() -> Exposition:
    """This worker's metrics, in the directory its server's workers share (app/http/metrics.py):
    chosen before the first metric exists, as prometheus_client requires."""
    directory = metrics.choose_directory(os.environ)
    metrics.prepare_directory(directory)
    telemetry.use_directory(directory)
    return Exposition(directory, ApiMetrics())


def build_application(
    holder: ServicesHolder, config: Config | None = None, exposition: Exposition | None = None
) -> Application:
    """Routes reading their Services from `holder`, each behind observed(), without the lifespan that
    sets them: tests of the HTTP layer set a Services of their own (tests/unit/app/test_pixel_http.py)."""
    router = Router()
    app = Application(router=router)
    configure_routes(router, holder, config, exposition)
    return app
