"""`python -m ingest query` against the running worker, and the worker's own start-up errors."""

import csv
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[3]


def ingest(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_query_command_answers_through_the_running_worker_in_any_format(ingest_env, ingest_worker):
    sql = "SELECT number AS n, toString(number * 2) AS twice FROM system.numbers LIMIT 3"
    piped = ingest(ingest_env, "query", sql)
    assert piped.returncode == 0 and piped.stdout == "0\t0\n1\t2\n2\t4\n", piped.stderr  # TSV, no header
    as_json = ingest(ingest_env, "query", sql, "--format", "JSONEachRow")
    assert [orjson.loads(line) for line in as_json.stdout.splitlines()] == [
        {"n": i, "twice": str(2 * i)} for i in range(3)
    ]
    as_csv = ingest(ingest_env, "query", sql, "--format", "CSVWithNames")
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [["n", "twice"], ["0", "0"], ["1", "2"], ["2", "4"]]
    assert ingest_worker["process"].poll() is None  # the worker kept the directory and kept running


def test_query_command_reads_sql_from_stdin(ingest_env, ingest_worker):
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "query"],
        cwd=ROOT,
        env={**os.environ, **ingest_env},
        input="SELECT 40 + 2",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "42\n", result.stderr


def test_query_command_refuses_writes_with_a_clear_message(ingest_env, ingest_worker, clickhouse_query):
    for sql in ("INSERT INTO events (workspace_id) VALUES (1)", "DROP TABLE events", "TRUNCATE TABLE events"):
        result = ingest(ingest_env, "query", sql)
        assert result.returncode == 1 and "Code: 164" in result.stderr and "READONLY" in result.stderr, (
            sql,
            result.stderr,
        )
    assert clickhouse_query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
    ) == [(1,)]


def test_query_command_reports_a_bad_query_and_exits_1(ingest_env, ingest_worker):
    result = ingest(ingest_env, "query", "SELECT * FROM no_such_table")
    assert result.returncode == 1 and "query failed" in result.stderr and "no_such_table" in result.stderr


def test_worker_names_kafka_and_what_to_do_when_kafka_is_unreachable(tmp_path):
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "CLICKHOUSE_URL": f"chdb://{tmp_path}",
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{uuid.uuid4().hex[:6]}.",
    }
    result = ingest(env, timeout=90)
    assert result.returncode == 1
    assert "kafka unavailable" in result.stderr and "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9" in result.stderr
