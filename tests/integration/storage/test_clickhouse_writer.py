"""Row splicing and schema statement splitting: the pure parts of the ClickHouse writer; and the
offsets a resumed worker seeks past, on real chdb in a child process (one directory per process)."""

import json
import subprocess
import sys
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from storage.clickhouse import client
from storage.clickhouse.writer import DATA_ERRORS, Rejected, _translate, source_row, source_rows

ROOT = Path(__file__).resolve().parents[3]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text().filter(lambda k: not k.startswith("_")), json_values, min_size=1),
    st.text(min_size=1),
    st.integers(0, 1000),
    st.integers(0, 2**62),
    st.sampled_from([b"", b"\n", b"  "]),
)
def test_a_spliced_row_is_the_record_plus_its_kafka_coordinates(record, topic, partition, offset, trailing):
    row = source_row(orjson.dumps(record) + trailing, orjson.dumps(topic), partition, offset)
    assert orjson.loads(row) == {**record, "_topic": topic, "_partition": partition, "_offset": offset}


values = st.dictionaries(st.text().filter(lambda k: not k.startswith("_")), json_values, min_size=1).map(
    orjson.dumps
) | st.sampled_from([b"", b"not json", b"[1, 2]", b"{}", b'"text"', b"12"])


@given(
    st.lists(
        st.tuples(values, st.sampled_from([b"", b"\n", b"  "]), st.integers(0, 5), st.integers(0, 2**62)), max_size=8
    )
)
def test_a_block_of_rows_is_each_spliced_row_on_its_own_line(records):
    class Record:
        def __init__(self, value, partition, offset):
            self.value, self.partition, self.offset = value, partition, offset

    rs = [Record(value + trailing, partition, offset) for value, trailing, partition, offset in records]
    block = source_rows(rs, b'"t"')
    assert block == b"".join(source_row(r.value, b'"t"', r.partition, r.offset) + b"\n" for r in rs)


@given(st.sampled_from([b"", b"not json", b"[1, 2]", b"{}", b'"text"', b"12"]))
def test_a_value_that_is_no_object_with_keys_never_splices_into_valid_json(value):
    row = source_row(value, b'"t"', 0, 0)
    try:
        parsed = orjson.loads(row)
    except orjson.JSONDecodeError:
        return
    raise AssertionError(f"{value!r} became {parsed!r}")


def test_schema_files_split_into_single_statements_without_comment_chunks():
    text = (
        "-- about\nCREATE TABLE a (x String DEFAULT ';')\n;\n\n-- next one\nCREATE VIEW b AS SELECT 1;\n-- trailing\n"
    )
    assert client.statements(text) == [
        "-- about\nCREATE TABLE a (x String DEFAULT ';')",
        "-- next one\nCREATE VIEW b AS SELECT 1",
    ]


def test_every_schema_file_holds_only_idempotent_statements():
    for path in sorted(client.SCHEMA.glob("*.sql")):
        for statement in client.statements(path.read_text()):
            body = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--"))
            assert "IF NOT EXISTS" in body, (path.name, body[:80])


def test_data_errors_are_rejections_and_the_rest_is_unavailability():
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    assert isinstance(_translate(DatabaseError("Code: 27. DB::Exception: Cannot parse input")), Rejected)
    assert 469 in DATA_ERRORS
    assert not isinstance(_translate(DatabaseError("Code: 60. Table default.x does not exist")), Rejected)
    assert not isinstance(_translate(OperationalError("Code: 27. connection reset")), Rejected)


TORN_INSERT = """
import json, sys, uuid
from storage.clickhouse import client as ch
from storage.clickhouse.writer import insert_rows, stored_offsets

c = ch.connect("chdb://" + sys.argv[1])
ch.apply_schema(c)

def rows(offsets, day):
    return b"".join(
        json.dumps({"event_id": str(uuid.uuid4()), "workspace_id": 1, "feature": "f", "quantity": 1,
                    "occurred_at": day, "_topic": "t", "_partition": 0, "_offset": o}).encode() + b"\\n"
        for o in offsets)

insert_rows(c, "usage_events", rows(range(0, 5), "2026-10-31 23:00:00.000"))
last = rows(range(5, 8), "2026-10-31 23:30:00.000") + rows(range(8, 10), "2026-11-01 00:10:00.000")
insert_rows(c, "usage_events", last)  # one INSERT, a part in each month
print(json.dumps(sorted(stored_offsets(c, {"t": "usage_events"}).items())))
# The worker died after the last INSERT's parts were in and before the views it feeds ran:
c.command("TRUNCATE TABLE ingest_offsets")
print(json.dumps(sorted(stored_offsets(c, {"t": "usage_events"}).items())))
"""


def test_stored_offsets_see_the_last_insert_even_when_its_views_did_not_run(tmp_path):
    """A resumed worker seeks past every row in ClickHouse: a part whose views (ingest_offsets
    among them) never ran, because the worker died in between, still counts, in every month."""
    done = subprocess.run(
        [sys.executable, "-c", TORN_INSERT, str(tmp_path / "ch")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with_view, without_view = done.stdout.splitlines()
    assert json.loads(with_view) == [[["t", 0], 9]]
    assert json.loads(without_view) == [[["t", 0], 9]]
