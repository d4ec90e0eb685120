"""Storage: hear of committed changes (LISTEN) so that in-process caches can drop what changed.

Postgres sends a NOTIFY to every listening connection when the writing transaction commits
(migration 0007's trigger notifies for each updated or deleted workspace). Requirements: a
cache must never serve a row whose change it could have missed, so while the listening
connection is down `live` is False (callers then read Postgres), and each new connection starts
with `on_reset()` (everything cached before it is dropped).
"""

import asyncio
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

# Reconnection backoff while Postgres is away: a quick retry after a blip, then every 5 s.
RETRY_MIN, RETRY_MAX = 0.2, 5.0


class ChangeListener:
    def __init__(self, dsn: str, channel: str, on_change: Callable[[str], None], on_reset: Callable[[], None]):
        """on_change(payload: str) for each notification; on_reset() when one may have been missed."""
        self.dsn, self.channel = dsn, channel
        self.on_change, self.on_reset = on_change, on_reset
        self.live = False
        self._lost = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._connection: asyncpg.Connection | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Listen from now on; waits briefly for the first connection (caching starts with it)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        for _ in range(int(timeout / 0.01)):
            if self.live:
                return
            await asyncio.sleep(0.01)
        log.warning("not listening on %s yet: caches read Postgres until it answers", self.channel)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close(timeout=2)

    async def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                await self._listen()
                delay = RETRY_MIN
                await self._lost.wait()
                log.warning("lost the %s notification connection; caches read Postgres until it is back", self.channel)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot listen on %s (%s); retrying in %.1f s", self.channel, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            finally:
                self.live = False

    async def _listen(self) -> None:
        self._lost.clear()
        connection = await asyncpg.connect(self.dsn, timeout=5)
        connection.add_termination_listener(lambda _conn: self._lost.set())
        try:
            await connection.add_listener(self.channel, self._notified)
        except BaseException:
            connection.terminate()  # not kept: the retry opens a new one
            raise
        self._connection = connection
        self.on_reset()  # whatever changed while nobody listened is dropped now
        self.live = True

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        self.on_change(str(payload))  # asyncpg decodes a NOTIFY payload to text; its stubs promise an object
