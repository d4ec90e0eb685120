"""Applies the numbered SQL files in migrations/ once each, in order, recorded in a table.

Safe to run from several processes at once: an advisory lock serialises them.
"""

import re
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates.
ADVISORY_LOCK_ID = 7_245_001

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED = "SELECT version FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[int, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name not of the form NNNN_name.sql: {path.name}")
        found.append((int(match.group(1)), path))
    return found


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the names of those applied now."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
        await conn.execute(CREATE_TABLE)
        applied = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
        done = []
        for version, path in migration_files():
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(INSERT_APPLIED, version, path.name)
            done.append(path.name)
        return done
    finally:
        await conn.close()
