"""Scratch state for the HTTP benchmarks: a fresh database, tenants, topics, and their removal.

Each run gets a database of its own (migrated), a Kafka topic prefix of its own and a temporary
directory, all removed at the end (``Scratch.cleanup``), also after Ctrl-C. Tenants are made
with the app's own repository functions (storage.postgres.workspaces/api_keys/domains/
entitlements), as tests/conftest.py makes them:

* an **enterprise** workspace (the highest rate-limit tier: 100,000 requests/min per key,
  bucket 200,000) with ``KEYS`` all-scopes keys: the load rotates over them, so the per-key
  limiter runs on every request but refuses none;
* its ``api_calls`` quota raised to the maximum, so usage recording is never refused;
* optionally a site (domain) for the pixel.

Workspace ids start at a random offset: Redis is shared, and quota counters are named by
workspace id, so a run must not count into another database's workspace 1.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from machine import ROOT

sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from app.access.tokens import generate_key  # noqa: E402
from app.resources.features import AMOUNT_MAX  # noqa: E402
from ingest.events import Topics  # noqa: E402
from storage.postgres import api_keys, domains, entitlements, workspaces  # noqa: E402
from storage.postgres.migrate import migrate  # noqa: E402
from storage.postgres.pool import create_pool  # noqa: E402
from storage.redis.quota import counter_key  # noqa: E402

TIER = "enterprise"
# 32 keys × 100,000/min: the limiter refuses nothing below ~53,000 req/s sustained, past what
# one granian worker on one core serves; the buckets (200,000 each) absorb any burst.
KEYS = 32
METERED = "api_calls"


@dataclass
class Tenant:
    workspace_id: int
    keys: list[str] = field(default_factory=list)
    host: str | None = None


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def make_tenant(dsn: str, keys: int = KEYS, host: str | None = None) -> Tenant:
    pool = await create_pool(dsn, 2)
    try:
        account = await workspaces.create_account(pool, "Bench Account")
        slug = f"bench-{uuid.uuid4().hex[:10]}"
        ws = await workspaces.create_workspace(pool, account["id"], "Bench Workspace", slug, slug, TIER, {})
        tenant = Tenant(ws["id"], host=host)
        for n in range(keys):
            key, prefix, key_hash = generate_key()
            await api_keys.create_key(pool, ws["id"], f"bench key {n}", prefix, key_hash, ["*"], None, None)
            tenant.keys.append(key)
        await entitlements.set_override(pool, ws["id"], METERED, AMOUNT_MAX)
        if host:
            await domains.create_domain(pool, ws["id"], host, {})
        return tenant
    finally:
        await pool.close()


@dataclass
class Scratch:
    """This run's database, topic prefix and directory; `cleanup` removes them all."""

    admin_dsn: str
    name: str = field(default_factory=lambda: f"sluice_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sluice-bench-")))
    tenants: list[Tenant] = field(default_factory=list)
    created: bool = False

    @property
    def dsn(self) -> str:
        return with_database(self.admin_dsn, self.name)

    @property
    def prefix(self) -> str:
        return f"sluice-{self.name.replace('_', '-')}."

    def env(self) -> dict[str, str]:
        """The app's environment for this run: its database, topics, spool; limits on."""
        base = {k: v for k, v in os.environ.items() if k != "SLUICE_RATE_LIMITS"}
        return {
            **base,
            "DATABASE_URL": self.dsn,
            "SLUICE_KAFKA_TOPIC_PREFIX": self.prefix,
            "SLUICE_CONSUMER_GROUP": self.prefix + "ingest",
            "SLUICE_SPOOL_DIR": str(self.workdir / "spool"),
            "SLUICE_TRUSTED_PROXIES": "127.0.0.1",
            "SLUICE_LOG_LEVEL": "warning",
        }

    def create(self) -> int:
        """Create and migrate the database; the number of migrations applied."""

        async def go() -> int:
            await _admin(self.admin_dsn, f'CREATE DATABASE "{self.name}"')
            self.created = True
            applied = await migrate(self.dsn)
            # A random start for workspace ids (see the module docstring).
            await _admin(
                self.dsn,
                f"SELECT setval(pg_get_serial_sequence('workspaces', 'id'), {random.randrange(10**9, 2 * 10**9)})",
            )
            return len(applied)

        return asyncio.run(go())

    def add_tenant(self, keys: int = KEYS, host: str | None = None) -> Tenant:
        tenant = asyncio.run(make_tenant(self.dsn, keys, host))
        self.tenants.append(tenant)
        return tenant

    def cleanup(self) -> list[str]:
        """Drop the database, the topics and the quota counters, remove the directory; the problems."""
        problems = []
        for what, step in (
            ("database", self._drop_database),
            ("topics", self._delete_topics),
            ("quota counters", self._delete_counters),
        ):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - report every leftover, not only the first
                problems.append(f"could not remove the {what} of {self.name}: {exc!r}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems

    def _drop_database(self) -> None:
        if self.created:
            asyncio.run(_admin(self.admin_dsn, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    def _delete_topics(self) -> None:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            return
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import UnknownTopicOrPartitionError

        topics = Topics.with_prefix(self.prefix)

        async def go() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                names = [t for t in (*topics.ingested(), topics.dead_letter) if t in existing]
                if names:
                    await admin.delete_topics(names)
            except UnknownTopicOrPartitionError:
                pass
            finally:
                await admin.close()

        asyncio.run(go())

    def _delete_counters(self) -> None:
        url = os.environ.get("REDIS_URL")
        if not url or not self.tenants:
            return
        import redis

        client = redis.Redis.from_url(url)
        try:
            for t in self.tenants:
                for key in client.scan_iter(counter_key(t.workspace_id, METERED) + "*"):
                    client.delete(key)
        finally:
            client.close()
