"""The retry schedule as README states it, written out here rather than read from the module under
test: the delays, their ±20 % jitter, the number of attempts, Retry-After in both forms and its cap."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.webhooks.retry_schedule import next_attempt_at, parse_retry_after

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
# README, Webhooks: "after 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (8 attempts), each ±20% jitter;
# Retry-After on 429/503 can only delay an attempt, at most 10 h".
README_DELAYS = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
README_ATTEMPTS = 8
README_JITTER = 0.2
README_RETRY_AFTER_CAP = 36000
DRAWS = 2000


def delay(attempts_made: int, rng: random.Random, retry_after: float | None = None) -> float:
    when = next_attempt_at(attempts_made, NOW, retry_after, rng)
    assert when is not None, f"no attempt after {attempts_made}: README promises {README_ATTEMPTS}"
    return (when - NOW).total_seconds()


def test_the_first_attempt_is_immediate():
    assert [delay(0, random.Random(seed)) for seed in range(50)] == [0.0] * 50


@pytest.mark.parametrize("attempts_made, seconds", list(enumerate(README_DELAYS))[1:])
def test_every_retry_is_its_readme_delay_within_twenty_percent_and_the_jitter_spreads_them(attempts_made, seconds):
    rng = random.Random(attempts_made)
    gaps = [delay(attempts_made, rng) for _ in range(DRAWS)]
    low, high = seconds * (1 - README_JITTER), seconds * (1 + README_JITTER)
    outside = [g for g in gaps if not low <= g <= high]
    assert outside == [], f"{len(outside)} of {DRAWS} draws outside [{low}, {high}] s, e.g. {outside[:3]}"
    # The jitter really spreads a burst: draws reach near both ends of the ±20 % band and rarely repeat.
    assert min(gaps) < seconds * (1 - 0.9 * README_JITTER), f"lowest draw {min(gaps)} s for a {seconds} s step"
    assert max(gaps) > seconds * (1 + 0.9 * README_JITTER), f"highest draw {max(gaps)} s for a {seconds} s step"
    assert len(set(gaps)) > DRAWS * 0.99


def test_the_module_random_jitters_too():
    gaps = {(next_attempt_at(1, NOW) - NOW).total_seconds() for _ in range(200)}
    assert len(gaps) > 190 and all(4.0 <= g <= 6.0 for g in gaps)


def test_there_are_eight_attempts_then_none():
    rng = random.Random(0)
    for attempts_made in range(README_ATTEMPTS):
        assert next_attempt_at(attempts_made, NOW, rng=rng) is not None, attempts_made
    assert next_attempt_at(README_ATTEMPTS, NOW, rng=rng) is None
    assert next_attempt_at(README_ATTEMPTS, NOW, retry_after=60, rng=rng) is None
    assert next_attempt_at(README_ATTEMPTS + 5, NOW, rng=rng) is None


@pytest.mark.parametrize("attempts_made", range(1, README_ATTEMPTS))
@pytest.mark.parametrize("retry_after", [README_RETRY_AFTER_CAP + 1, 10**7, 10**12])
def test_a_retry_after_past_ten_hours_is_cut_to_ten_hours(attempts_made, retry_after):
    gap = delay(attempts_made, random.Random(attempts_made), retry_after)
    # Never past the cap, unless the step itself (10 h + jitter) is later.
    plain = delay(attempts_made, random.Random(attempts_made))
    assert gap == max(plain, README_RETRY_AFTER_CAP)


@pytest.mark.parametrize("retry_after", [7201, 20000, README_RETRY_AFTER_CAP - 1, README_RETRY_AFTER_CAP])
def test_a_retry_after_up_to_ten_hours_is_followed_to_the_second(retry_after):
    # After attempt 1 the step is 5 s: any of these is later, and is taken as given.
    assert delay(1, random.Random(1), retry_after) == retry_after


@pytest.mark.parametrize("attempts_made", range(1, README_ATTEMPTS))
def test_a_retry_after_never_brings_an_attempt_forward(attempts_made):
    seconds = README_DELAYS[attempts_made]
    gap = delay(attempts_made, random.Random(5), retry_after=0)
    assert seconds * (1 - README_JITTER) <= gap <= seconds * (1 + README_JITTER)
    assert gap == delay(attempts_made, random.Random(5))


@given(retry_after=st.floats(0, 10**9), attempts=st.integers(1, README_ATTEMPTS - 1), seed=st.integers(0, 2**32))
def test_retry_after_only_delays_and_never_past_the_cap(retry_after, attempts, seed):
    plain = delay(attempts, random.Random(seed))
    honoured = delay(attempts, random.Random(seed), retry_after)
    assert honoured == pytest.approx(max(plain, min(retry_after, README_RETRY_AFTER_CAP)), abs=1e-6)


def test_retry_after_is_read_as_seconds_or_an_http_date():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(format_datetime(NOW + timedelta(minutes=3), usegmt=True), NOW) == 180
    assert parse_retry_after(format_datetime(NOW - timedelta(minutes=3), usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None and parse_retry_after(None, NOW) is None
    assert parse_retry_after("-5", NOW) is None
