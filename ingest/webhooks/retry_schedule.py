"""When a failed webhook delivery is tried again: the schedule, its jitter and Retry-After.

Pure arithmetic on a given `now`, so tests drive it with any clock.
"""

import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

# Delay before attempt n+1 after n attempts: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h (Svix's schedule): eight attempts over about 27.6 hours, long enough to ride out an
# outage of a day.
SCHEDULE_SECONDS = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
MAX_ATTEMPTS = len(SCHEDULE_SECONDS)
# ±20 % spreads the retries of a burst that failed together.
JITTER = 0.2
# A Retry-After (on 429 or 503) may push an attempt later than the schedule, but not past the
# longest step: one answer must not park a delivery for days.
RETRY_AFTER_MAX_SECONDS = 10 * 3600
RETRY_AFTER_STATUSES = (429, 503)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds()) if when.tzinfo else None


def next_attempt_at(
    attempts_made: int, now: datetime, retry_after: float | None = None, rng: random.Random | None = None
) -> datetime | None:
    """When to try again after `attempts_made` attempts, or None when the retries ran out."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    delay = SCHEDULE_SECONDS[attempts_made] * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_SECONDS))
    return now + timedelta(seconds=delay)
