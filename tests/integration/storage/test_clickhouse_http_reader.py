"""Readers of ClickHouse: through the worker's HTTP interface while it holds the chdb directory,
never opening a directory another process holds; `python -m ingest query` in process otherwise."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.clickhouse.client import QueryFailed, WorkerReader, chdb_directory, held_elsewhere, open_reader
from storage.errors import Unavailable

ROOT = Path(__file__).resolve().parents[3]


def test_chdb_url_gives_its_directory():
    assert chdb_directory("chdb:///tmp/a/b") == "/tmp/a/b"


def test_reader_of_a_held_directory_goes_through_the_worker_and_cannot_write(ingest_env, ingest_worker):
    reader = open_reader(ingest_env["CLICKHOUSE_URL"])
    assert isinstance(reader, WorkerReader)
    for sql in ("INSERT INTO events (workspace_id) VALUES (1)", "DROP TABLE events"):
        with pytest.raises(QueryFailed, match="READONLY"):
            reader.query(sql)
    with pytest.raises(QueryFailed, match="ACCESS_DENIED"):
        reader.query("SELECT * FROM file('sluice-probe.csv', 'CSV', 'x UInt8')")
    assert reader.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
    ).result_rows == [(1,)]


def test_worker_reader_passes_parameters_and_returns_columns(ingest_env, ingest_worker):
    result = open_reader(ingest_env["CLICKHOUSE_URL"]).query(
        "SELECT {n:UInt32} + 1 AS next, {names:Array(String)} AS names", parameters={"n": 41, "names": ["a", "b"]}
    )
    assert result.column_names == ("next", "names") and result.result_rows == [(42, ["a", "b"])]


def test_a_reader_never_opens_a_directory_another_process_holds(tmp_path):
    """A worker interface that does not answer (here: none at all) while another process has the engine
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
        assert time.monotonic() - started >= 1.5  # it asked again until the deadline
    finally:
        holder.kill()
        holder.wait()
    assert not held_elsewhere(chdb_directory(url))  # the holder is gone: the directory may be opened here


def test_query_command_on_a_directory_nobody_holds_runs_in_process_with_the_same_checks(tmp_path):
    env = {**os.environ, "CLICKHOUSE_URL": f"chdb://{tmp_path / 'free'}"}
    run = [sys.executable, "-m", "ingest", "query", "--format", "CSVWithNames"]
    ok = subprocess.run([*run, "SELECT 1 AS one"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.splitlines() == ['"one"', "1"], ok.stderr
    refused = subprocess.run(
        [*run, "SELECT file('/etc/passwd')"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "Code: 497" in refused.stderr


GATED = """
import asyncio, sys, threading, time
import httpx
from storage.clickhouse.http_interface import HttpInterface, Settings
from storage.clickhouse.writer import INSERTS

async def main():
    interface = HttpInterface(sys.argv[1], Settings("127.0.0.1", 0))
    await interface.start()
    order, inserting = [], threading.Event()

    def insert():  # stands for an INSERT in progress: the table has the rows, its views not yet
        with INSERTS.inserting():
            inserting.set()
            time.sleep(3)
            order.append("insert done")

    def query():
        inserting.wait()
        httpx.get(interface.url + "/", params={"query": "SELECT 1"}, timeout=60).raise_for_status()
        order.append("query answered")

    threads = [threading.Thread(target=insert), threading.Thread(target=query)]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    print(",".join(order), flush=True)
    await interface.close()

asyncio.run(main())
"""


def test_a_query_waits_for_the_insert_in_progress(tmp_path):
    """An INSERT makes its rows visible in its table before in the views it feeds: a query that
    arrives meanwhile starts after it, so a reader that saw rows in `events` finds them in the
    rollups on its next query."""
    done = subprocess.run(
        [sys.executable, "-c", GATED, str(tmp_path / "ch")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "insert done,query answered"
