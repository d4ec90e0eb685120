"""Ingest stage "sessions": each pixel event's session, decided by the consumer in Kafka order.

A session is one visitor's events on one site with no gap longer than the site's session timeout
(30 minutes unless the domain says otherwise). It is never cut at an hour, a day or a salt change:
near a change of the visitor-id salt the API sends the visitor's id under the previous salt too,
and an event whose visitor has no session yet continues the one of that previous id.

Where the state lives, and why: pixel records are keyed by workspace id, so one Kafka partition
holds every event of a site in the order the API handed them off, and one consumer owns a
partition at a time. It keeps, per partition, each recent visitor's current session in memory
(id, first and last event time, last arrival): no round trip on the pixel's hot path, and nothing
else to keep consistent, because the state is rebuilt from ClickHouse (`sessions_state`) whenever a
partition is assigned — from the rows written by the same INSERTs as the offsets the consumer
resumes from (storage/clickhouse/sessions.py).

Every decision is a function of the partition's records in offset order — times come from the
records (the event's time t and its arrival r, both in the record's hint), never from the
consumer's clock — and the rebuilt state is what those records leave behind. So a restart, a
rebalance, or a replay of the topic from its start into an empty ClickHouse, gives every event the
same session id. For event e of visitor v on a site with timeout T, in a partition whose newest
arrival so far among events of sites with sessions on is W:
1. T = 0 (the site has sessions off): session id 0, nothing remembered.
2. r < W − LATE_BOUND: e arrived late (e.g. replayed from a spool after a long Kafka outage): late.
3. v's current session s is the last one v started or joined, unless its last arrival is older
   than W − HORIZON (then v has none: HORIZON bounds memory).
4. no s, or t > s.end + T: e starts a new session.
5. t < s.start − T: e belongs before v's current session by more than a gap: late.
6. otherwise e joins s, which then spans min/max of its times (events out of order within T are fine).
A late event is a session of its own, marked by bit 63 of its id (`sessions.is_late`), never v's
current session; the consumer counts them (`late_events`). Ids are a keyed-free 63-bit hash of
(workspace, visitor, t, r) of the session's first event: stable across replays, unique in practice.
"""

import hashlib
from dataclasses import dataclass, field

LATE_BIT = 1 << 63
ID_MASK = LATE_BIT - 1
# An event arriving this long after the newest one of its partition is late (rule 2).
LATE_BOUND_MS = 30 * 60 * 1000
# The longest session timeout a domain may set (app/pixel/domains.py), and how long after its
# last arrival a visitor's session is kept: a later event of theirs could not join it anyway
# unless its client clock is more than LATE_BOUND behind.
MAX_TIMEOUT_MS = 240 * 60 * 1000
HORIZON_MS = MAX_TIMEOUT_MS + LATE_BOUND_MS
# Forget expired visitors whenever the watermark has moved this far since the last sweep: a sweep
# copies the partition's map, so not often (memory holds at most 1.5 horizons of visitors).
SWEEP_EVERY_MS = HORIZON_MS // 2
# {"_session":"<visitor>|<previous visitor>|<timeout s>|<time ms>|<received ms>",  (ingest/events.py session_prefix)
HINT_START = b'{"_session":"'
HINT_END = b'",'


@dataclass(slots=True)
class Session:
    id: int
    start: int  # epoch ms of its earliest event
    end: int  # epoch ms of its latest event
    last_received: int  # epoch ms of the latest arrival among its events


@dataclass(slots=True)
class PartitionState:
    """One partition's visitors: (workspace id, visitor id) → current session."""

    watermark: int = 0  # newest arrival seen (epoch ms)
    swept_at: int = 0
    visitors: dict[tuple[int, bytes], Session] = field(default_factory=dict)

    def current(self, key: tuple[int, bytes]) -> Session | None:
        session = self.visitors.get(key)
        if session is not None and session.last_received < self.watermark - HORIZON_MS:
            return None
        return session

    def sweep(self) -> None:
        if self.watermark - self.swept_at < SWEEP_EVERY_MS:
            return
        floor = self.watermark - HORIZON_MS
        self.visitors = {key: s for key, s in self.visitors.items() if s.last_received >= floor}
        self.swept_at = self.watermark


def session_id(workspace_id: int, visitor_id: bytes, time_ms: int, received_ms: int, late: bool) -> int:
    digest = hashlib.blake2b(b"%d|%s|%d|%d" % (workspace_id, visitor_id, time_ms, received_ms), digest_size=8)
    value = int.from_bytes(digest.digest(), "big") & ID_MASK or 1
    return value | LATE_BIT if late else value


Hint = tuple[bytes, bytes, int, int, int]  # visitor, previous visitor, timeout s, time ms, received ms


def assign(state: PartitionState, workspace_id: int, hint: Hint) -> tuple[int, bool]:
    """The event's session id and whether it is late (rules 1–6 above), updating `state`."""
    visitor, previous, timeout_s, t, r = hint
    if timeout_s == 0 or not visitor:
        return 0, False
    if r > state.watermark:
        state.watermark = r
    if r < state.watermark - LATE_BOUND_MS:
        return session_id(workspace_id, visitor, t, r, True), True
    key = (workspace_id, visitor)
    session = state.current(key)
    aliased = session is None and bool(previous)
    if aliased:
        session = state.current((workspace_id, previous))
    timeout = timeout_s * 1000
    if session is None or t > session.end + timeout:
        session = Session(session_id(workspace_id, visitor, t, r, False), t, t, r)
        state.visitors[key] = session
        return session.id, False
    if t < session.start - timeout:
        return session_id(workspace_id, visitor, t, r, True), True
    if aliased:  # the same object: both ids follow the session from now on
        state.visitors[key] = session
    if t < session.start:
        session.start = t
    elif t > session.end:
        session.end = t
    if r > session.last_received:
        session.last_received = r
    return session.id, False


def workspace_of(key: bytes | None) -> int:
    try:
        return int(key or b"0")
    except ValueError:
        return 0


class Sessions:
    """The consumer's session state for the pixel partitions it owns."""

    def __init__(self, pixel_topic: str):
        self.topic = pixel_topic
        self.partitions: dict[int, PartitionState] = {}
        self.counts = {"late_events": 0}
        self.workspaces: dict[bytes | None, int] = {}  # record key → workspace id

    def rewrite(self, topic: str, partition: int, records: list) -> None:
        """Give each pixel record its session: the hint is replaced by `"session_id":N` (in place,
        records are aiokafka's mutable ConsumerRecords). Records in offset order, each exactly once."""
        if topic != self.topic:
            return
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionState()
        late = 0
        workspaces = self.workspaces
        for record in records:
            # parse_hint, inlined: this loop runs once per pixel record.
            value = record.value
            if not value or not value.startswith(HINT_START):
                continue  # a record without a hint (an older API): stored with session_id 0
            cut = value.find(HINT_END, 13)
            parts = value[13:cut].split(b"|") if cut > 0 else []
            if len(parts) != 5:
                continue
            visitor, previous, timeout, t, r = parts
            try:
                hint = (visitor, previous, int(timeout), int(t), int(r))
            except ValueError:
                continue
            cut += 2
            key = record.key
            workspace = workspaces.get(key)
            if workspace is None:
                workspace = workspaces[key] = workspace_of(key)
            sid, is_late = assign(state, workspace, hint)
            late += is_late
            record.value = b'{"session_id":%d,' % sid + value[cut:]
        self.counts["late_events"] += late
        state.sweep()

    def forget(self, partitions) -> None:
        """Partitions this consumer no longer owns: their next owner rebuilds them."""
        for partition in partitions:
            self.partitions.pop(partition, None)

    def restore(
        self, partition: int, watermark: int, sessions: list[tuple[int, list[str] | list[bytes], int, int, int, int]]
    ) -> None:
        """Rebuild a partition's state from ClickHouse: its newest arrival, and the sessions whose last
        arrival is within HORIZON of it as (workspace, visitor ids, id, start, end, last arrival).
        Each visitor id gets the session with the latest end among them, as rule 3 left it."""
        state = PartitionState(watermark=watermark, swept_at=watermark)
        floor = watermark - HORIZON_MS
        for workspace, visitors, sid, start, end, last_received in sessions:
            if last_received < floor or sid & LATE_BIT or sid == 0:
                continue
            session = Session(sid, start, end, last_received)
            for visitor in visitors:
                key = (workspace, visitor.encode() if isinstance(visitor, str) else visitor)
                known = state.visitors.get(key)
                if known is None or known.end < session.end:
                    state.visitors[key] = session
        self.partitions[partition] = state
