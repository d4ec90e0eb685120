"""The Stats API's query-time budget: milliseconds of ClickHouse time per workspace per minute,
checked before a query and charged after it (stats_budget.lua beside it, one EVALSHA each).

Requirements: one workspace's heavy queries must not starve the others' (a query is admitted only
while the workspace's minute is under budget; concurrent ones admitted together may overshoot it by
their own run time, each bounded by ClickHouse's max_execution_time); Redis' clock decides the
minute, so API hosts' clocks do not matter; one key per workspace for Redis Cluster.
"""

from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from storage.errors import Unavailable
from storage.redis.scripts import Script


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    allowed: bool
    spent_ms: int  # this minute's spending before the query
    retry_after: int  # seconds until the minute turns and the budget is whole again


def budget_key(workspace_id: int) -> str:
    # The braces are a hash tag, the same as the workspace's quota counters.
    return f"sluice:stats-budget:{{ws:{workspace_id}}}"


class QueryBudget:
    def __init__(self, client: redis.Redis):
        self.script = Script(client, "stats_budget.lua")

    async def admit(self, workspace_id: int, budget_ms: int) -> BudgetDecision:
        allowed, spent, left = await self._run([budget_key(workspace_id)], ["admit", budget_ms])
        return BudgetDecision(bool(int(allowed)), int(spent), int(left))

    async def spend(self, workspace_id: int, milliseconds: int) -> int:
        """Charge a finished (or failed) query's time; the minute's spending after it."""
        return int(await self._run([budget_key(workspace_id)], ["spend", max(0, milliseconds)]))

    async def _run(self, keys: list, args: list):
        try:
            return await self.script(keys, args)
        except (RedisError, OSError) as exc:
            raise Unavailable("Redis", str(exc)) from exc
