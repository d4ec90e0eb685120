"""Contract of storage/compat/clickhouse_connect_internals.py: the client clickhouse-connect returns
for chdb:// is recognised as embedded, and takes the writer's insert as an iterator of parts.
In a child process: chdb holds one directory per process, and other tests open theirs."""

import subprocess
import sys
from pathlib import Path

from storage.compat import clickhouse_connect_internals

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = """
import sys
import clickhouse_connect
from storage.clickhouse.writer import insert_rows
from storage.compat.clickhouse_connect_internals import is_embedded

client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
assert is_embedded(client), f"{type(client).__module__}.{type(client).__qualname__} is not recognised as chdb"
client.command("CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")
written = insert_rows(client, "t", [b'{"x": 1}\\n', bytearray(b'{"x": 2}\\n{"x"'), b': 3}\\n'])
print(written, client.query("SELECT sum(x) FROM t").result_rows[0][0])
"""


def test_a_chdb_client_is_embedded_and_takes_an_insert_in_parts(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "ch")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["3", "6"]


def test_other_clients_are_not_embedded():
    class HttpClient:
        pass

    assert not clickhouse_connect_internals.is_embedded(HttpClient())
