"""The wire format's ids and times: unique across forked workers, exact to the millisecond."""

import os
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ingest.events import DropReason, ch_time, event_id

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_event_ids_are_uuid7_and_carry_their_millisecond():
    ms = 1_764_620_000_123
    parsed = uuid.UUID(event_id(ms))
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert int(parsed.hex[:12], 16) == ms


def test_forked_workers_never_draw_the_same_ids():
    """granian forks its workers from one parent: each must draw its own random bits."""
    ms = 1_764_620_000_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids for the same millisecond, then leave at once
        os.write(write, ",".join(event_id(ms) for _ in range(200)).encode())
        os._exit(0)
    os.close(write)
    mine = {event_id(ms) for _ in range(200)}
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    theirs = set(b"".join(chunks).decode().split(","))
    assert len(mine) == len(theirs) == 200
    assert not mine & theirs


@given(st.lists(st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999), min_size=1, max_size=5))
def test_ch_time_matches_datetime_arithmetic_whatever_came_before(moments):
    """ch_time remembers the last second's text: interleaved seconds must not leak into each other."""
    for ms in moments + moments[::-1]:
        moment = EPOCH + timedelta(milliseconds=ms)
        assert ch_time(ms) == moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def test_drop_reasons_keep_their_stored_values():
    assert [reason.value for reason in DropReason] == [
        "invalid",
        "bot",
        "rate_limited",
        "sampled_out",
        "unknown_domain",
        "disabled",
        "spool_full",
        "consent",
        "excluded",
    ]
