"""Command line: `python -m app migrate | create-workspace | create-key | set-tier | set-entitlement |
counters | serve | run | status`."""

import argparse
import asyncio
import logging
import os
import sys

from redis.exceptions import RedisError

from app.access.scopes import KNOWN
from app.access.tokens import generate_key
from app.cli import counters, status, supervisor
from app.resources.features import AMOUNT_MAX, FEATURES
from app.resources.workspaces import TIERS, slugify
from storage.clickhouse import client as clickhouse
from storage.config import Config, load_or_exit
from storage.errors import Conflict, NotFound, Unavailable
from storage.postgres import api_keys, entitlements, workspaces
from storage.postgres.migrate import migrate
from storage.postgres.pool import create_pool
from storage.redis.client import close_client, create_client
from storage.redis.key_gate import RECORD_TTL_SECONDS, KeyGate
from storage.redis.quota import QuotaStore
from storage.telemetry import logs

log = logging.getLogger("sluice.serve")


async def run_migrate(config: Config, _args) -> None:
    applied = await migrate(config.shared.database_url)
    print(f"migrations: applied {len(applied)} ({', '.join(applied) or 'database already current'})")


async def run_create_workspace(config: Config, args) -> None:
    pool = await create_pool(config.shared.database_url, 2)
    try:
        account_id = args.account_id
        if account_id is None:
            account_id = (await workspaces.create_account(pool, args.account_name or args.name))["id"]
        row = await workspaces.create_workspace(
            pool, account_id, args.name, args.slug, slugify(args.name), args.tier, {}
        )
    finally:
        await pool.close()
    print(f"workspace {row['id']} '{row['name']}' (slug {row['slug']}, tier {row['tier']}, account {account_id})")
    print(f"next: python -m app create-key --workspace-id {row['id']}")


async def run_create_key(config: Config, args) -> None:
    unknown = [s for s in args.scopes if s not in KNOWN]
    if unknown:
        raise SystemExit(f"unknown scopes: {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
    key, prefix, key_hash = generate_key()
    pool = await create_pool(config.shared.database_url, 2)
    try:
        row = await api_keys.create_key(
            pool, args.workspace_id, args.name, prefix, key_hash, args.scopes, args.tier, None
        )
    finally:
        await pool.close()
    print(f"api key {row['id']} for workspace {args.workspace_id}, scopes {' '.join(row['scopes'])}", file=sys.stderr)
    print("store it now; it is not shown again:", file=sys.stderr)
    print(key)


async def run_set_tier(config: Config, args) -> int:
    """The one way a workspace's tier (its plan) changes; clients cannot change it over the API."""
    pool = await create_pool(config.shared.database_url, 2)
    try:
        row = await workspaces.set_tier(pool, args.workspace_id, args.tier)
        hashes = await api_keys.workspace_key_hashes(pool, args.workspace_id)
    finally:
        await pool.close()
    print(f"workspace {row['id']} '{row['name']}' is now on tier {row['tier']}")
    # API processes drop their cached row on Postgres' notification; the key records cached in
    # Redis carry the old rate limit, so they go now: the next request reads the new tier.
    redis = create_client(config.shared.redis_url)
    try:
        await KeyGate(redis).forget(hashes)
    except (RedisError, OSError) as exc:
        print(
            f"could not drop the cached records of its {len(hashes)} key(s) in Redis ({exc}); "
            f"the old rate limit lasts at most {RECORD_TTL_SECONDS} s more",
            file=sys.stderr,
        )
        return 1
    finally:
        await close_client(redis)
    print(
        f"rate limits of its {len(hashes)} key(s) apply from the next request; its feature limits within "
        f"SLUICE_ENTITLEMENTS_CACHE_SECONDS ({config.api.entitlements_cache_seconds} s)"
    )
    return 0


async def run_set_entitlement(config: Config, args) -> None:
    if args.limit is not None and not 0 <= args.limit <= AMOUNT_MAX:
        raise SystemExit(f"--limit must be between 0 and {AMOUNT_MAX}")
    pool = await create_pool(config.shared.database_url, 2)
    try:
        if args.limit is None:
            removed = await entitlements.delete_override(pool, args.workspace_id, args.feature)
        else:
            await entitlements.set_override(pool, args.workspace_id, args.feature, args.limit)
    finally:
        await pool.close()
    if args.limit is None:
        print(
            f"workspace {args.workspace_id}: {args.feature} back to its tier's limit"
            + ("" if removed else " (it had no override)")
        )
    else:
        print(f"workspace {args.workspace_id}: {args.feature} limited to {args.limit}")
    print(f"applies within SLUICE_ENTITLEMENTS_CACHE_SECONDS ({config.api.entitlements_cache_seconds} s)")


def open_clickhouse(url: str):
    """Read through the ingest worker when it holds the embedded directory (`make run`); else
    open ClickHouse here, creating the tables first, as the worker may never have run."""
    reader = clickhouse.open_reader(url)
    if not isinstance(reader, clickhouse.DirectReader):
        return reader
    reader.close()
    client = clickhouse.connect(url)
    clickhouse.apply_schema(client)
    return client


async def run_counters(config: Config, args) -> int:
    """Rebuild or check the counters; exit code 1 when `drift` finds any."""
    ch = await asyncio.to_thread(open_clickhouse, config.shared.clickhouse_url)
    pool, redis = await create_pool(config.shared.database_url, 2), create_client(config.shared.redis_url)
    try:
        if args.action == "rebuild":
            return report_rebuild(await counters.rebuild(pool, QuotaStore(redis), ch, args.workspace_id))
        return report_drift(await counters.drift(pool, QuotaStore(redis), ch, args.workspace_id), args.all)
    finally:
        await pool.close()
        await close_client(redis)
        await asyncio.to_thread(ch.close)


def report_rebuild(rebuilt: list) -> int:
    if rebuilt:
        print(counters.table(rebuilt))
    print(f"counters: rebuilt {len(rebuilt)} (redis: value found, source: value written)")
    return 0


def report_drift(checked: list, show_all: bool) -> int:
    drifting = [c for c in checked if c.drift]
    if drifting or show_all:
        print(counters.table(checked if show_all else drifting))
    workspaces = len({c.workspace_id for c in checked})
    print(f"counters: {len(checked)} checked in {workspaces} workspace(s), {len(drifting)} drifting")
    return 1 if drifting else 0


async def run_status(config: Config, _args) -> int:
    """One screen: what runs and how it does; exit code 1 when anything fails."""
    lines = await status.collect(config)
    print(status.render(lines, colour=sys.stdout.isatty()))
    return status.exit_code(lines)


# Seconds granian waits before starting a worker again after one died: a worker that crashes at
# once is retried at this pace instead of in a tight loop, and a lone crash costs one worker's share.
RESPAWN_INTERVAL_SECONDS = 1


def serve_command(config: Config, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--loop",
        "uvloop",
        "--host",
        config.api.host,
        "--port",
        str(config.api.port),
        "--workers",
        str(workers),
        "--log-level",
        config.shared.log_level,
        # granian's own lines in Sluice's format; one access line per request, the API's `sluice.access`.
        "--log-config",
        str(logs.GRANIAN_LOG_CONFIG),
        "--no-access-log",
        "--no-ws",
        "--http1-header-read-timeout",
        str(config.api.header_timeout_seconds * 1000),
        "--respawn-failed-workers",
        "--respawn-interval",
        str(RESPAWN_INTERVAL_SECONDS),
        "app.main:create_app",
    ]


def run_serve(config: Config, args) -> None:
    workers = args.workers or config.api.workers
    command = serve_command(config, workers)
    # Through the log, not print: a collector reading JSON lines gets nothing else on this stream.
    logs.setup("api", config.shared)
    log.info("serving on http://%s:%d with %d worker(s)", config.api.host, config.api.port, workers)
    os.execv(command[0], command)


def run_all(config: Config, args) -> int:
    """Migrate, then the API, the ingest worker and the webhook dispatcher together until Ctrl-C."""
    asyncio.run(run_migrate(config, args))
    workers = args.workers or config.api.workers
    print(
        f"[run] API on http://{config.api.host}:{config.api.port} ({workers} worker(s)), the ingest worker "
        "(Kafka → ClickHouse) and the webhook dispatcher; Ctrl-C stops them all",
        file=sys.stderr,
    )
    print(
        "[run] query ClickHouse meanwhile with: .venv/bin/python -m ingest query 'SELECT count() FROM events'",
        file=sys.stderr,
    )
    return supervisor.run_children(
        {
            "ingest worker": [sys.executable, "-m", "ingest"],
            "webhook dispatcher": [sys.executable, "-m", "ingest.webhooks.dispatcher"],
            "API server": serve_command(config, workers),
        }
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="Sluice API commands")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending Postgres migrations")
    ws = sub.add_parser("create-workspace", help="create a workspace (and a new account unless --account-id)")
    ws.add_argument("--name", required=True)
    ws.add_argument("--slug")
    ws.add_argument("--tier", choices=TIERS, default="free")
    ws.add_argument("--account-id", type=int)
    ws.add_argument("--account-name")
    key = sub.add_parser("create-key", help="create an API key and print it (once)")
    key.add_argument("--workspace-id", type=int, required=True)
    key.add_argument("--name", default="bootstrap key")
    key.add_argument("--scopes", nargs="+", default=["*"], help="default: * (every scope)")
    key.add_argument("--tier", choices=TIERS, help="rate limit tier (default: the workspace's)")
    tier = sub.add_parser("set-tier", help="change a workspace's tier (plan): its rate and feature limits")
    tier.add_argument("--workspace-id", type=int, required=True)
    tier.add_argument("--tier", choices=TIERS, required=True)
    ent = sub.add_parser("set-entitlement", help="override a workspace's limit of one feature")
    ent.add_argument("--workspace-id", type=int, required=True)
    ent.add_argument("--feature", choices=list(FEATURES), required=True)
    limit = ent.add_mutually_exclusive_group(required=True)
    limit.add_argument("--limit", type=int, help="the new limit (0 switches the feature off)")
    limit.add_argument("--reset", action="store_true", help="drop the override: back to the tier's limit")
    cnt = sub.add_parser("counters", help="rebuild the Redis counters from their records, or report drift")
    cnt_sub = cnt.add_subparsers(dest="action", required=True)
    rebuild = cnt_sub.add_parser("rebuild", help="set every drifting counter to Postgres/ClickHouse's value")
    drift = cnt_sub.add_parser("drift", help="report counters that differ from their records (exit 1 if any)")
    drift.add_argument("--all", action="store_true", help="list every counter, not only drifting ones")
    for action in (rebuild, drift):
        action.add_argument("--workspace-id", type=int, help="only this workspace (default: every one)")
    serve = sub.add_parser("serve", help="serve the API with granian")
    serve.add_argument("--workers", type=int)
    run = sub.add_parser("run", help="migrate, then serve the API and run the ingest worker until Ctrl-C")
    run.add_argument("--workers", type=int)
    sub.add_parser("status", help="services, API, lag, spool, webhooks and inserts at a glance (exit 1: trouble)")
    return p


def main() -> None:
    args = parser().parse_args()
    config = load_or_exit(os.environ)  # before anything starts: a refused value is one line, no traceback
    if args.command == "serve":
        return run_serve(config, args)
    if args.command == "run":
        sys.exit(run_all(config, args))
    command = {
        "migrate": run_migrate,
        "create-workspace": run_create_workspace,
        "create-key": run_create_key,
        "set-tier": run_set_tier,
        "set-entitlement": run_set_entitlement,
        "counters": run_counters,
        "status": run_status,
    }
    try:
        code = asyncio.run(command[args.command](config, args))
    except NotFound as exc:
        raise SystemExit(f"not found: {exc}") from None  # each message carries the detail
    except Conflict as exc:
        raise SystemExit(f"conflict: {exc}") from None
    except Unavailable as exc:
        raise SystemExit(f"{exc}; is the stack up? try: make up") from None
    except OSError as exc:
        raise SystemExit(f"cannot reach Postgres at DATABASE_URL ({exc}); is the stack up? try: make up") from None
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
