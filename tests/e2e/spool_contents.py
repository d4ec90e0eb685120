"""What API processes left in a spool directory, read with the spool's own reader (ingest/handoff/spool.py).

Each owner's subdirectory is copied first: opening a Spool cuts torn tails off and deletes replayed
segments, which must not happen under a live owner's feet.
"""

import asyncio
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from ingest.handoff.spool import Spool, SpooledRecord

# Reading never appends, so the bound only has to be above anything a test spools.
READ_BOUND = 1 << 40


def spooled_records(spool_dir: Path) -> dict[str, list[SpooledRecord]]:
    """Owner subdirectory name → the records it holds that are still to be replayed, in order."""
    owners = sorted(p for p in Path(spool_dir).iterdir() if p.is_dir() and not p.name.startswith(".claim-"))
    return {owner.name: _read_copy(owner) for owner in owners}


def values_of(records: list[SpooledRecord], topic: str) -> list[dict]:
    """The decoded JSON values of the records of `topic`."""
    return [orjson.loads(record.value) for record in records if record.topic == topic]


def _read_copy(owner: Path) -> list[SpooledRecord]:
    with tempfile.TemporaryDirectory() as directory:
        copy = Path(directory) / owner.name
        shutil.copytree(owner, copy, ignore=shutil.ignore_patterns("lock", "*.tmp"))
        # A thread of its own, so that async tests (whose loop is running) can call it too.
        with ThreadPoolExecutor(1) as executor:
            return executor.submit(asyncio.run, _read_all(copy)).result()


async def _read_all(path: Path) -> list[SpooledRecord]:
    spool = Spool(path, READ_BOUND)
    records: list[SpooledRecord] = []
    try:
        while (chunk := await spool.read()) is not None:
            records += chunk.records
    finally:
        await spool.close()
    return records
