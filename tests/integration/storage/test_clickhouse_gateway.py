"""The read gateway: statements it takes, and a real worker refusing writes through it."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.clickhouse import gateway
from storage.clickhouse.client import chdb_directory, held_elsewhere, open_reader
from storage.errors import Unavailable

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  select 1",
        "WITH 1 AS x SELECT x",
        "SHOW TABLES",
        "DESCRIBE events",
        "EXPLAIN SELECT 1",
        "-- note\nSELECT 1",
        "/* c */ SELECT 1",
    ],
)
def test_read_statements_are_taken(sql):
    assert gateway.is_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO events VALUES (1)",
        "DROP TABLE events",
        "ALTER TABLE events DELETE WHERE 1",
        "TRUNCATE events",
        "OPTIMIZE TABLE events",
        "SYSTEM STOP MERGES",
        "SELECTX",
        "",
        "CREATE TABLE t (x UInt8) ENGINE = Memory",
        "-- SELECT\nDROP TABLE events",
    ],
)
def test_anything_else_is_refused_before_clickhouse_sees_it(sql):
    assert not gateway.is_read_only(sql)


def test_long_directories_get_a_socket_path_that_fits_sun_path():
    path = gateway.socket_path("/tmp/" + "d" * 200)
    assert len(path.encode()) <= gateway.MAX_SOCKET_PATH and path.endswith(".sock")


def test_chdb_url_gives_its_directory():
    assert chdb_directory("chdb:///tmp/a/b") == "/tmp/a/b"


def test_gateway_refuses_writes_and_clickhouse_itself_is_read_only_for_it(ingest_env, ingest_worker):
    reader = open_reader(ingest_env["CLICKHOUSE_URL"])
    assert isinstance(reader, gateway.Reader)
    for sql in ("INSERT INTO events (workspace_id) VALUES (1)", "DROP TABLE events"):
        with pytest.raises(gateway.QueryFailed, match="read-only"):
            reader.query(sql)
    # Past the statement check, ClickHouse's readonly=2 still refuses a write hidden in a table function.
    with pytest.raises(gateway.QueryFailed, match="readonly"):
        reader.query("SELECT * FROM file('sluice-gateway-probe.csv', 'CSV', 'x UInt8') SETTINGS readonly = 0")
    assert reader.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
    ).result_rows == [(1,)]


def test_gateway_passes_parameters_and_returns_columns(ingest_env, ingest_worker):
    result = open_reader(ingest_env["CLICKHOUSE_URL"]).query(
        "SELECT {n:UInt32} + 1 AS next, {names:Array(String)} AS names", parameters={"n": 41, "names": ["a", "b"]}
    )
    assert result.column_names == ("next", "names") and result.result_rows == [(42, ["a", "b"])]


def test_a_reader_never_opens_a_directory_another_process_holds(tmp_path):
    """A gateway that does not answer (here: none at all) while another process has the engine
    open: the reader waits and says so, instead of opening the directory and failing on its lock."""
    url = f"chdb://{tmp_path / 'held'}"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from storage.clickhouse.client import connect\n"
            f"client = connect({url!r})\n"
            "client.query('SELECT 1')\n"
            "print('open', flush=True)\n"
            "time.sleep(60)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert held_elsewhere(chdb_directory(url))
        started = time.monotonic()
        with pytest.raises(Unavailable, match="open in another process"):
            open_reader(url, wait=1.5)
        assert time.monotonic() - started >= 1.5  # it asked the gateway again until the deadline
    finally:
        holder.kill()
        holder.wait()
    assert not held_elsewhere(chdb_directory(url))  # the holder is gone: the directory may be opened here
