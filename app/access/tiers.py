"""The plan tiers, lowest first, and the comparisons that keep a key or workspace within its plan.

A workspace's tier is its plan; an API key's `rate_limit_tier` may only narrow it. Kept apart
from app/resources/workspaces.py so that authentication (app/access/auth.py) can use it without importing a
route module.
"""

from storage.postgres.workspaces import TIERS

RANK = {tier: rank for rank, tier in enumerate(TIERS)}


def exceeds(tier: str, ceiling: str) -> bool:
    """True when `tier` is above `ceiling` in the order free < starter < pro < agency < enterprise."""
    return RANK[tier] > RANK[ceiling]


def capped(tier: str | None, ceiling: str) -> str:
    """A key's tier within its workspace's: the lower of the two (None follows the workspace)."""
    if tier is None or exceeds(tier, ceiling):
        return ceiling
    return tier
