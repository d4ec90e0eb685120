"""The retry schedule: jitter bounds, the end of retries, Retry-After in both forms and its cap."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from ingest.webhooks.retry_schedule import (
    JITTER,
    MAX_ATTEMPTS,
    RETRY_AFTER_MAX_SECONDS,
    SCHEDULE_SECONDS,
    next_attempt_at,
    parse_retry_after,
)

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


@given(attempts=st.integers(1, MAX_ATTEMPTS - 1), seed=st.integers(0, 2**32))
def test_each_retry_falls_within_the_jitter_of_its_step(attempts, seed):
    gap = (next_attempt_at(attempts, NOW, rng=random.Random(seed)) - NOW).total_seconds()
    step = SCHEDULE_SECONDS[attempts]
    assert step * (1 - JITTER) <= gap <= step * (1 + JITTER)


def test_retries_end_after_the_last_step():
    assert next_attempt_at(MAX_ATTEMPTS, NOW) is None
    assert MAX_ATTEMPTS == 8 and sum(SCHEDULE_SECONDS) / 3600 > 27


@given(retry_after=st.floats(0, 10**9), attempts=st.integers(1, MAX_ATTEMPTS - 1))
def test_retry_after_never_brings_a_retry_forward_nor_pushes_it_past_the_cap(retry_after, attempts):
    rng = random.Random(1)
    plain = next_attempt_at(attempts, NOW, rng=random.Random(1))
    honoured = next_attempt_at(attempts, NOW, retry_after, rng)
    assert honoured >= plain
    assert honoured <= max(plain, NOW + timedelta(seconds=RETRY_AFTER_MAX_SECONDS))


def test_retry_after_is_read_as_seconds_or_an_http_date():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(format_datetime(NOW + timedelta(minutes=3), usegmt=True), NOW) == 180
    assert parse_retry_after(format_datetime(NOW - timedelta(minutes=3), usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None and parse_retry_after(None, NOW) is None
    assert parse_retry_after("-5", NOW) is None
