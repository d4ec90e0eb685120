"""The feature catalogue: every metered or stocked feature, its limit per tier, its billing period.

The one place limits are defined; README's "Entitlements" table is this table. Pure data and
arithmetic: no I/O, so unit tests check its invariants (tests/unit/app/test_features.py).
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from app.access.tiers import TIERS

STOCK = "stock"  # a level that goes up and down (posts held), never reset
METERED = "metered"  # consumption per billing period (calendar month, UTC), reset each period
# Redis' Lua counts in doubles, exact below 2**53 (about 9e15): every limit, quantity and
# level stays at most this, so sums stay exact and counters print as plain integers.
AMOUNT_MAX = 10**15
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class Feature:
    key: str
    kind: str
    noun: str  # for "<noun> limit exceeded. Used: …" (the spec's "Post limit exceeded")
    limits: dict[str, int]  # tier → limit, in `unit` (a count unless unit is set)
    unit: str | None = None

    @property
    def metered(self) -> bool:
        return self.kind == METERED


def _tiers(*limits: int) -> dict[str, int]:
    return dict(zip(TIERS, limits, strict=True))


# Pro's limits are the spec's examples (posts 1000, api_calls 10000, storage 5 GiB); the
# others step by roughly ×10 (×5 at the cheap end) so each upgrade is worth its price.
FEATURES: dict[str, Feature] = {
    f.key: f
    for f in (
        Feature("posts", STOCK, "Post", _tiers(10, 100, 1_000, 10_000, 100_000)),
        Feature("api_calls", METERED, "API call", _tiers(1_000, 5_000, 10_000, 100_000, 1_000_000)),
        Feature("storage", STOCK, "Storage", _tiers(100 * MIB, GIB, 5 * GIB, 50 * GIB, 500 * GIB), unit="bytes"),
        Feature("webhooks", STOCK, "Webhook endpoint", _tiers(1, 5, 20, 100, 1_000)),
        Feature("seo_reports", METERED, "SEO report", _tiers(10, 100, 1_000, 10_000, 100_000)),
    )
}


def limit_for(feature: Feature, tier: str, overrides: dict[str, int]) -> int:
    """A workspace's limit: its override if it has one, else its tier's."""
    return overrides.get(feature.key, feature.limits[tier])


def billing_period(now: datetime) -> tuple[str, datetime]:
    """The calendar month (UTC) holding `now`: its label ("2026-11") and the first instant of the next."""
    now = now.astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return f"{now.year:04d}-{now.month:02d}", datetime(year, month, 1, tzinfo=UTC)


def limit_message(feature: Feature, used: int, limit: int) -> str:
    return f"{feature.noun} limit exceeded. Used: {used}, Limit: {limit}"


def percentage(used: int, limit: int) -> float | int:
    """Share of the limit used, 2 decimals; whole numbers as ints, as the spec shows `20`."""
    if limit == 0:  # an override of 0 switches the feature off: nothing is available
        return 100
    value = round(used * 100 / limit, 2)
    return int(value) if value.is_integer() else value
