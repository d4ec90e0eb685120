"""Sessions as the consumer decides them: the rules, and that a restart anywhere changes nothing."""

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.events import session_prefix
from ingest.worker.sessions import (
    HORIZON_MS,
    LATE_BIT,
    LATE_BOUND_MS,
    PartitionState,
    Sessions,
    assign,
)

MIN = 60_000
T0 = 1_780_000_000_000
TIMEOUT_S = 30 * 60


def hint(visitor="a" * 32, t=T0, r=None, timeout=TIMEOUT_S, previous=""):
    return (visitor.encode(), previous.encode(), timeout, t, t if r is None else r)


def ids(*hints, workspace=1):
    state = PartitionState()
    return [assign(state, workspace, h)[0] for h in hints]


def test_events_5_minutes_apart_share_a_session_and_31_minutes_apart_do_not():
    a, b, c = ids(hint(t=T0), hint(t=T0 + 5 * MIN), hint(t=T0 + 36 * MIN))
    assert a == b != c
    assert a and c and not a & LATE_BIT and not c & LATE_BIT


def test_the_gap_is_measured_from_the_last_event_not_the_first():
    stamps = [T0 + i * 20 * MIN for i in range(10)]  # 3 hours, never a 30-minute gap
    assert len(set(ids(*(hint(t=t) for t in stamps)))) == 1


def test_the_timeout_is_the_sites_own():
    a, b = ids(hint(t=T0, timeout=10 * 60), hint(t=T0 + 11 * MIN, timeout=10 * 60))
    assert a != b
    a, b = ids(hint(t=T0, timeout=120 * 60), hint(t=T0 + 90 * MIN, timeout=120 * 60))
    assert a == b


def test_a_session_goes_on_across_midnight_and_an_hour_boundary():
    midnight = (T0 // 86_400_000 + 1) * 86_400_000
    a, b, c = ids(
        hint(t=midnight - 10 * MIN), hint(t=midnight + 5 * MIN), hint(t=midnight + 3_600_000 - MIN + 30 * MIN)
    )
    assert a == b
    assert c != b  # 45 minutes after the last: a new one


def test_visitors_and_workspaces_have_sessions_of_their_own():
    state = PartitionState()
    one = assign(state, 1, hint(visitor="a" * 32))[0]
    other_visitor = assign(state, 1, hint(visitor="b" * 32))[0]
    other_site = assign(state, 2, hint(visitor="a" * 32))[0]
    assert len({one, other_visitor, other_site}) == 3


def test_events_out_of_order_within_the_timeout_join_and_widen_the_session():
    state = PartitionState()
    first = assign(state, 1, hint(t=T0, r=T0))[0]
    earlier = assign(state, 1, hint(t=T0 - 20 * MIN, r=T0 + MIN))[0]
    assert earlier == first
    # the session now starts 20 minutes earlier: 45 minutes before the first event is within 30 of it
    assert assign(state, 1, hint(t=T0 - 45 * MIN, r=T0 + 2 * MIN))[0] == first


def test_an_event_before_the_session_by_more_than_the_timeout_is_late_and_alone():
    state = PartitionState()
    first = assign(state, 1, hint(t=T0))[0]
    late, is_late = assign(state, 1, hint(t=T0 - 31 * MIN, r=T0 + MIN))
    assert is_late and late & LATE_BIT and late != first
    assert assign(state, 1, hint(t=T0 + MIN, r=T0 + 2 * MIN))[0] == first  # the visitor's session is untouched


def test_an_event_arriving_long_after_its_partition_moved_on_is_late():
    state = PartitionState()
    assign(state, 1, hint(visitor="b" * 32, t=T0 + LATE_BOUND_MS + MIN))
    sid, is_late = assign(state, 1, hint(t=T0, r=T0))
    assert is_late and sid & LATE_BIT


def test_a_site_without_sessions_gets_session_zero():
    assert ids(hint(timeout=0), hint(timeout=0)) == [0, 0]


def test_near_a_salt_change_the_previous_visitor_id_continues_the_session():
    old, new = "0" * 32, "1" * 32
    state = PartitionState()
    before = assign(state, 1, hint(visitor=old, t=T0))[0]
    after = assign(state, 1, hint(visitor=new, previous=old, t=T0 + 10 * MIN))[0]
    then = assign(state, 1, hint(visitor=new, t=T0 + 20 * MIN))[0]
    assert before == after == then


def test_a_visitor_unseen_for_the_horizon_is_forgotten():
    state = PartitionState()
    first = assign(state, 1, hint(t=T0))[0]
    for step in range(1, 12):  # another visitor moves the partition's clock on
        assign(state, 1, hint(visitor="b" * 32, t=T0 + step * 25 * MIN))
    assert state.watermark - T0 > HORIZON_MS
    state.sweep()
    assert (1, b"a" * 32) not in state.visitors
    assert assign(state, 1, hint(t=state.watermark))[0] != first


@dataclass
class Record:
    key: bytes
    value: bytes
    offset: int = 0


def test_sessions_rewrite_only_the_pixel_topic_and_leave_records_without_a_hint_alone():
    sessions = Sessions("p.pixel")
    hinted = Record(b"7", session_prefix("ab" * 16, "", 1800, T0, T0) + b'"event":"pageview"}')
    plain = Record(b"7", b'{"event":"pageview"}')
    other = Record(b"7", session_prefix("ab" * 16, "", 1800, T0, T0) + b'"x":1}')
    sessions.rewrite("p.pixel", 0, [hinted, plain])
    sessions.rewrite("p.usage", 0, [other])
    sid = assign(PartitionState(), 7, (b"ab" * 16, b"", 1800, T0, T0))[0]
    assert hinted.value == b'{"session_id":%d,"event":"pageview"}' % sid
    assert plain.value == b'{"event":"pageview"}'
    assert other.value.startswith(b'{"_session":')


# -- a restart anywhere assigns the same sessions ---------------------------------------------


def stored(events: list[tuple[int, tuple], ...], decided: list[int]) -> list:
    """What ClickHouse's sessions_state gives back for the events decided so far (storage/clickhouse/sessions.py)."""
    sessions: dict[tuple[int, int], dict] = {}
    for (workspace, h), sid in zip(events, decided, strict=True):
        if sid == 0:
            continue
        visitor, _previous, _timeout, t, r = h
        s = sessions.setdefault((workspace, sid), {"visitors": set(), "start": t, "end": t, "received": r})
        s["visitors"].add(visitor)
        s["start"], s["end"], s["received"] = min(s["start"], t), max(s["end"], t), max(s["received"], r)
    return [
        (workspace, sorted(s["visitors"]), sid, s["start"], s["end"], s["received"])
        for (workspace, sid), s in sessions.items()
    ]


visitors = st.sampled_from(["0" * 32, "1" * 32, "2" * 32])
steps = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),  # workspace
        visitors,
        st.sampled_from(["", "0" * 32]),  # previous id
        st.sampled_from([0, 600, 1800]),  # timeout
        st.integers(-6 * 60 * MIN, 60 * MIN),  # client clock skew (times after the arrival are clamped)
        st.integers(0, 90 * MIN),  # arrival step
    ),
    max_size=60,
)


def stream(raw) -> list[tuple[int, tuple]]:
    r, events = T0, []
    for workspace, visitor, previous, timeout, skew, step in raw:
        r += step if step % 7 else -step // 3  # arrivals mostly forward, sometimes back (a spool's replay)
        events.append((workspace, (visitor.encode(), previous.encode(), timeout, min(r, r + skew - 30 * MIN), r)))
    return events


@settings(max_examples=1500, deadline=None)
@given(steps, st.data())
def test_a_restart_at_any_offset_gives_every_event_the_same_session(raw, data):
    events = stream(raw)
    whole = PartitionState()
    expected = [assign(whole, w, h)[0] for w, h in events]

    cut = data.draw(st.integers(0, len(events)))
    first = PartitionState()
    decided = [assign(first, w, h)[0] for w, h in events[:cut]]
    assert decided == expected[:cut]
    sessions = Sessions("pixel")
    watermark = max((h[4] for _, h in events[:cut]), default=0)
    sessions.restore(0, watermark, stored(events[:cut], decided))
    resumed = sessions.partitions[0]
    assert [assign(resumed, w, h)[0] for w, h in events[cut:]] == expected[cut:]


@pytest.mark.parametrize("late", [True, False])
def test_late_ids_carry_the_late_bit_and_others_do_not(late):
    state = PartitionState()
    assign(state, 1, hint(t=T0 + 2 * LATE_BOUND_MS))
    sid, is_late = assign(state, 1, hint(visitor="c" * 32, t=T0 if late else T0 + 2 * LATE_BOUND_MS))
    assert is_late is late and bool(sid & LATE_BIT) is late


def test_past_the_horizon_even_a_fitting_time_starts_a_new_session_as_a_restart_would():
    state = PartitionState()
    first = assign(state, 1, hint(t=T0))[0]
    assign(state, 1, hint(visitor="b" * 32, t=T0 + HORIZON_MS + MIN))  # the partition's clock moves on
    # the visitor's clock is hours behind: its time fits the old session, its arrival does not
    late_clock = hint(t=T0 + 10 * MIN, r=T0 + HORIZON_MS + 2 * MIN)
    again = assign(state, 1, late_clock)[0]
    assert again != first
    restored = Sessions("pixel")
    restored.restore(0, T0 + HORIZON_MS + MIN, [(1, ["a" * 32], first, T0, T0, T0)])
    assert assign(restored.partitions[0], 1, late_clock)[0] == again
