"""Assembles the application: configuration, pools, routes, middleware, lifespan."""

import gc
import logging
import os

from blacksheep import Application
from blacksheep.server.routing import Router

from app.access.auth import Authenticator
from app.access.rate_limits import FailedAuthLimit, LocalLimiter, RedisHealth
from app.http import health, metrics, openapi
from app.http.middleware import BodyDeadline, request_middleware
from app.http.routing import Route, Services, endpoint, fallback
from app.pixel import domains
from app.pixel import track as pixel
from app.pixel.intake import Pixel
from app.resources import api_keys, entitlements, mcp, seo, webhooks, workspaces
from app.resources.ledger import Ledger
from ingest.events import Topics
from ingest.handoff.producer import DurableProducer
from storage.config import ApiConfig, Config, load_or_exit
from storage.postgres.pool import create_pool
from storage.postgres.workspace_cache import WorkspaceCache
from storage.redis.client import close_client, create_client
from storage.redis.idempotency import IdempotencyStore
from storage.redis.key_gate import KeyGate


def api_routes() -> list[Route]:
    """Every route of the API; tests read this table to check each one's scope."""
    routes = (
        health.ROUTES
        + metrics.ROUTES
        + workspaces.ROUTES
        + api_keys.ROUTES
        + entitlements.ROUTES
        + seo.ROUTES
        + mcp.ROUTES
    )
    routes += pixel.ROUTES + domains.ROUTES + webhooks.ROUTES
    return routes + openapi.routes_for(routes)


def configure_routes(router: Router, services: Services) -> list[Route]:
    routes = api_routes()
    for route in routes:
        router.add(route.method, route.path, endpoint(route, services))
    router.fallback = fallback(routes)
    return routes


def create_producer(config: Config, topics: Topics) -> DurableProducer:
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
    )


def create_authenticator(api: ApiConfig, pool, redis) -> Authenticator:
    health = RedisHealth()  # the process's one view of Redis: the pixel shares it (app/http/metrics.py reports it)
    local = LocalLimiter(api.workers) if api.rate_limits else None
    failures = (
        FailedAuthLimit(redis, health, api.auth_failures_per_minute, api.workers, api.trusted_proxies)
        if api.auth_failures_per_minute > 0
        else None
    )
    return Authenticator(pool, KeyGate(redis, api.rate_limits), local, api.last_used_flush_seconds, health, failures)


def configure_lifespan(app: Application, services: Services) -> None:
    config = services.config
    shared, api = config.shared, config.api

    @app.lifespan
    async def resources():
        services.mcp = mcp.create_registry(config)  # first: a bad registry file stops the start cleanly
        services.pool = await create_pool(shared.database_url, api.pg_pool_size)
        services.workspaces = WorkspaceCache(services.pool, shared.database_url, api.workspace_cache_seconds)
        await services.workspaces.start()
        services.redis = create_client(shared.redis_url)
        services.authenticator = create_authenticator(api, services.pool, services.redis)
        services.authenticator.start()  # also PINGs Redis while it is marked down
        producer = create_producer(config, services.topics)
        await producer.start()  # never waits long for Kafka: it spools meanwhile
        services.sink = producer  # handlers see only the Sink protocol (ingest/handoff/sink.py)
        services.idempotency = IdempotencyStore(services.redis)
        services.entitlements = Ledger(
            services.pool, services.redis, producer, services.topics.usage, api.entitlements_cache_seconds
        )
        services.pixel = Pixel(config, services.pool, services.redis, producer, services.authenticator.health)
        services.pixel.start()
        tune_gc()
        try:
            yield
        finally:
            await services.pixel.stop()  # its last drop counts go out with the producer's flush
            await producer.stop()  # flushes to Kafka, or leaves the rest in the spool
            await services.authenticator.stop()
            await services.workspaces.stop()
            await close_client(services.redis)
            await services.pool.close()


def tune_gc() -> None:
    """Move everything start-up made out of the collector's sight.

    Full collections otherwise walk every long-lived object (pools, clients, the route table:
    ~36 ms a pass) while requests wait: with it, pixel/track's p99 went from 59-64 ms to 15 ms at
    saturation and throughput up ~5% (bench/pixel_e2e.py's load, 64 connections).
    """
    gc.collect()
    gc.freeze()


def create_app(config: Config | None = None):
    """The ASGI application granian serves (`app.main:create_app`: configured from the environment),
    BlackSheep's inside the body read deadline."""
    config = config or load_or_exit(os.environ)
    logging.basicConfig(level=config.shared.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    services = Services(config, topics=Topics.with_prefix(config.shared.kafka_topic_prefix))
    app = build_application(services)
    configure_lifespan(app, services)
    return BodyDeadline(app, config.api.body_timeout_seconds)


def build_application(services: Services) -> Application:
    """Routes and middleware around `services`, without the lifespan that fills them: tests of the
    HTTP layer pass a Services of their own (tests/unit/app/test_pixel_http.py)."""
    router = Router()
    app = Application(router=router)
    configure_routes(router, services)
    app.middlewares.append(request_middleware)
    return app
