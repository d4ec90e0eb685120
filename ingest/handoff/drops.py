"""Ingest stage "what was not accepted": counts of dropped and rejected events, to Kafka.

Counting in memory and sending one Drop record per (workspace, reason, source) each second
keeps the hot path free of I/O for events that are refused, a flood of them included. The
records are best effort (Sink.send_soon, ingest/handoff/sink.py): a lost count loses a statistic,
never an event. The same counts, without the workspace, go to sluice_pixel_events_dropped_total.
"""

import asyncio
import contextlib
import time
from collections import Counter

from ingest.events import Drop, DropReason, ch_time, workspace_key
from ingest.handoff.sink import Sink
from storage.telemetry.metrics import ApiMetrics

FLUSH_SECONDS = 1.0


class DropCounter:
    def __init__(self, sink: Sink, topic: str, flush_seconds: float = FLUSH_SECONDS, metrics: ApiMetrics | None = None):
        self.sink = sink
        self.metrics = metrics
        self.topic = topic
        self.flush_seconds = flush_seconds
        self.counts: Counter[tuple[int, DropReason, str]] = Counter()
        self.since_ms = time.time_ns() // 1_000_000
        self._task: asyncio.Task | None = None

    def add(self, workspace_id: int, reason: DropReason, source: str, count: int = 1) -> None:
        """workspace_id 0: the workspace could not be known (unknown domain, unreadable body)."""
        self.counts[(workspace_id, reason, source)] += count
        if self.metrics is not None:
            self.metrics.pixel_dropped(reason, source, count)

    def flush(self) -> int:
        """Hand the counts so far to the sink; returns how many records that was."""
        counts, self.counts = self.counts, Counter()
        interval = ch_time(self.since_ms)
        self.since_ms = time.time_ns() // 1_000_000
        for (workspace_id, reason, source), count in counts.items():
            drop = Drop(workspace_id, reason, source, count, interval)
            self.sink.send_soon(self.topic, workspace_key(workspace_id), drop.encode())
        return len(counts)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def stop(self) -> None:
        """Flush once more; call before the sink stops so that it sends these too."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            self.flush()
