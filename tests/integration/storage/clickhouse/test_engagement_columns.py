"""The engagement columns of `events` (schema/0010_engagement.sql) on real chdb: the ingest writer
inserts PixelEvent records as the consumer does, never naming the columns, and ClickHouse fills
pageview_id, engaged_ms and scroll_depth from the properties; garbage reads 0 or '' and never fails
an insert; rows stored before the columns existed read '' and 0.

In a child process: chdb opens one directory per process, and other tests open theirs.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
PAGEVIEW_ID = "0123456789abcdef"

SCRIPT = """
import dataclasses, json, sys, uuid
from storage.clickhouse import client as ch
from storage.clickhouse.writer import insert_rows, source_rows
from ingest.events import PixelEvent

c = ch.connect("chdb://" + sys.argv[1])
work = json.loads(sys.stdin.read())

def event(name, properties, offset):
    return PixelEvent(
        event_id=str(uuid.uuid4()), workspace_id=1, event=name, time="2026-11-10 10:00:00.000",
        received_at="2026-11-10 10:00:00.000", client_time=None, url="https://shop.test/", host="shop.test",
        path="/", referrer="", referrer_host="", utm_source="", utm_medium="", utm_campaign="", utm_term="",
        utm_content="", properties=properties, visitor_id="v", ip_prefix="", user_agent="", browser="",
        browser_version="", os="", os_version="", device="desktop", device_brand="", device_model="",
        is_bot=False, country="", region="", city="", referrer_source="", channel="", source="json")

class Record:
    def __init__(self, value, offset):
        self.value, self.partition, self.offset = value, 0, offset

def insert(events, first):
    records = [Record(event(name, props, first + i).encode(), first + i) for i, (name, props) in enumerate(events)]
    return insert_rows(c, "events", source_rows(records, b'"pixel"'))

# The schema as it stood before the engagement columns, and a row stored then.
for path in sorted(ch.SCHEMA.glob("*.sql")):
    if path.name < "0010":
        for statement in ch.statements(path.read_text()):
            c.command(statement)
written = insert(work["before"], 0)
ch.apply_schema(c)
written += insert(work["after"], 1000)
rows = c.query(
    "SELECT event, properties, pageview_id, engaged_ms, scroll_depth FROM events ORDER BY _offset"
).result_rows
print(json.dumps({"written": written, "rows": [list(r) for r in rows]}))
"""

BEFORE = [("pageview", json.dumps({"title": "Old"}))]


def measured(ms, depth) -> tuple[str, dict]:
    return "engagement", {"pageview_id": PAGEVIEW_ID, "engaged_ms": ms, "scroll_depth": depth}


# (event, properties) → (pageview_id, engaged_ms, scroll_depth) read back.
AFTER = [
    (("pageview", {"title": "Home", "pageview_id": PAGEVIEW_ID}), (PAGEVIEW_ID, 0, 0)),
    (measured(4200, 75), (PAGEVIEW_ID, 4200, 75)),
    (measured(1500.6, 99.5), (PAGEVIEW_ID, 1500, 100)),
    # Clamped: negative to 0, past 24 h to 24 h, past 100 % to 100.
    (measured(-5, -1), (PAGEVIEW_ID, 0, 0)),
    (measured(1e30, 1e30), (PAGEVIEW_ID, 86_400_000, 100)),
    (measured(2**63, 2**40), (PAGEVIEW_ID, 86_400_000, 100)),
    # Not numbers (numeric text included): 0; so is an integer past 64 bits, which ClickHouse reads as text.
    (measured(2**64, -(2**64)), (PAGEVIEW_ID, 0, 0)),
    (measured("5000", "50"), (PAGEVIEW_ID, 0, 0)),
    (measured(None, True), (PAGEVIEW_ID, 0, 0)),
    (measured([1], {"a": 1}), (PAGEVIEW_ID, 0, 0)),
    # An id that is no short token, or none: ''.
    (("engagement", {"pageview_id": 12345, "engaged_ms": 10}), ("", 10, 0)),
    (("engagement", {"pageview_id": "x" * 65, "engaged_ms": 10}), ("", 10, 0)),
    (("engagement", {"pageview_id": "a'b; DROP", "engaged_ms": 10}), ("", 10, 0)),
    (("pageview", {"pageview_id": {"nested": PAGEVIEW_ID}}), ("", 0, 0)),
    (("engagement", {}), ("", 0, 0)),
    # Only pageview and engagement events carry them.
    (("signup", {"pageview_id": PAGEVIEW_ID, "engaged_ms": 4200, "scroll_depth": 75}), ("", 0, 0)),
]


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict:
    work = {"before": BEFORE, "after": [(name, json.dumps(props)) for (name, props), _ in AFTER]}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("engagement") / "ch")],
        cwd=ROOT,
        input=json.dumps(work),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_row_is_inserted_whatever_its_properties_hold(stored):
    assert stored["written"] == len(BEFORE) + len(AFTER)


def test_columns_are_computed_from_the_properties_and_garbage_reads_zero(stored):
    read = [tuple(row[2:]) for row in stored["rows"][len(BEFORE) :]]
    assert read == [expected for _, expected in AFTER]
    assert [row[1] for row in stored["rows"][len(BEFORE) :]] == [json.dumps(p) for (_, p), _ in AFTER]


def test_rows_stored_before_the_columns_existed_read_empty_and_zero(stored):
    assert [tuple(row[2:]) for row in stored["rows"][: len(BEFORE)]] == [("", 0, 0)]
