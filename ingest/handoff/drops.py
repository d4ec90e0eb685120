"""Ingest stage "what was not accepted": counts of dropped and rejected events, to Kafka.

Counting in memory and sending one Drop record per (workspace, reason, source) each second
keeps the hot path free of I/O for events that are refused, a flood of them included. The
records are best effort (producer.send_soon): a lost count loses a statistic, never an event.
"""

import asyncio
import contextlib
import time
from collections import Counter

from ingest.events import Drop, ch_time, workspace_key

FLUSH_SECONDS = 1.0
REASONS = ("invalid", "bot", "rate_limited", "sampled_out", "unknown_domain", "disabled", "spool_full")


class DropCounter:
    def __init__(self, producer, topic: str, flush_seconds: float = FLUSH_SECONDS):
        self.producer = producer
        self.topic = topic
        self.flush_seconds = flush_seconds
        self.counts: Counter[tuple[int, str, str]] = Counter()
        self.since_ms = time.time_ns() // 1_000_000
        self._task: asyncio.Task | None = None

    def add(self, workspace_id: int, reason: str, source: str, count: int = 1) -> None:
        """workspace_id 0: the workspace could not be known (unknown domain, unreadable body)."""
        self.counts[(workspace_id, reason, source)] += count

    def flush(self) -> int:
        """Hand the counts so far to the producer; returns how many records that was."""
        counts, self.counts = self.counts, Counter()
        interval = ch_time(self.since_ms)
        self.since_ms = time.time_ns() // 1_000_000
        for (workspace_id, reason, source), count in counts.items():
            drop = Drop(workspace_id, reason, source, count, interval)
            self.producer.send_soon(self.topic, workspace_key(workspace_id), drop.encode())
        return len(counts)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def stop(self) -> None:
        """Flush once more; call before the producer stops so that it sends these too."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            self.flush()
