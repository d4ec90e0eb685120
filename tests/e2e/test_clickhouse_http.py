"""ClickHouse's HTTP interface as the ingest worker serves it for its chdb directory: standard
clients (clickhouse-connect, curl, @clickhouse/client) read through it, every write or escape is
refused with ClickHouse's code and changes nothing, limits hold, and inserts go on meanwhile."""

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import httpx
import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.exceptions import DatabaseError

from ingest.events import Topics, workspace_key
from tests.system_packages import require

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60
ANALYST, ANALYST_PASSWORD = "ana", "correct horse battery staple"
NODE_CLIENT = "@clickhouse/client@1.23.1"
NODE_CACHE = ROOT / ".services" / "node-clients"
MAX_EXECUTION_SECONDS = 5
MAX_RESULT_BYTES = 5_000_000


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """A worker of its own on an any-port interface bound to every address, with one analyst."""
    run = f"chhttp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    directory = tmp_path_factory.mktemp("clickhouse-http")
    env = {
        **os.environ,
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-{run}.",
        "SLUICE_CONSUMER_GROUP": run,
        "SLUICE_KAFKA_PARTITIONS": "2",
        "CLICKHOUSE_URL": f"chdb://{directory}",
        "SLUICE_CONSUMER_BATCH_MS": "50",
        "SLUICE_CLICKHOUSE_HTTP": "0.0.0.0:0",
        "SLUICE_CLICKHOUSE_HTTP_USERS": f"{ANALYST}:{hashlib.sha256(ANALYST_PASSWORD.encode()).hexdigest()}",
        "SLUICE_CLICKHOUSE_HTTP_MAX_EXECUTION_SECONDS": str(MAX_EXECUTION_SECONDS * 4),
        "SLUICE_CLICKHOUSE_HTTP_MAX_RESULT_BYTES": str(MAX_RESULT_BYTES),
    }
    log = directory.parent / f"{run}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + WAIT_SECONDS
    while "partitions assigned" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    info = json.loads((directory / ".sluice-http-key").read_text())
    yield {"env": env, "url": info["url"], "key": info["key"], "port": int(info["url"].rsplit(":", 1)[1]), "log": log}
    process.terminate()
    process.wait(30)


def analyst(worker, **kwargs):
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=worker["port"], username=ANALYST, password=ANALYST_PASSWORD, **kwargs
    )


def post(worker, sql: str, auth=(ANALYST, ANALYST_PASSWORD), **params) -> httpx.Response:
    return httpx.post(worker["url"] + "/", params=params, content=sql.encode(), auth=auth, timeout=60)


def count(worker, sql: str) -> int:
    return int(post(worker, sql).text)


# --- clients -------------------------------------------------------------------------------------


def test_clickhouse_connect_queries_dataframes_arrow_streams_and_parameters(worker):
    client = analyst(worker)
    assert client.query("SELECT {n:UInt32} + 1 AS n, {s:String} AS s", parameters={"n": 41, "s": "é"}).result_rows == [
        (42, "é")
    ]
    frame = client.query_df("SELECT number, toString(number) AS s FROM numbers(3)")
    assert frame["s"].tolist() == ["0", "1", "2"]
    assert client.query_arrow("SELECT number FROM numbers(4)").column("number").to_pylist() == [0, 1, 2, 3]
    with client.query_rows_stream("SELECT number FROM numbers(200000)") as stream:
        assert sum(row[0] for row in stream) == sum(range(200000))
    with client.query_column_block_stream("SELECT number FROM numbers(100000)") as blocks:
        assert sum(len(block[0]) for block in blocks) == 100000
    assert client.query(
        "SELECT count() FROM system.tables WHERE database = 'default' AND name = 'events'"
    ).result_rows == [(1,)]


def test_curl_answers_tsv_and_ping(worker):
    got = subprocess.run(
        [
            "curl",
            "-sS",
            "-u",
            f"{ANALYST}:{ANALYST_PASSWORD}",
            "--data-binary",
            "SELECT 1, 'a' FORMAT TSV",
            worker["url"],
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert got.stdout == "1\ta\n"
    assert httpx.get(worker["url"] + "/ping").text == "Ok.\n"


@pytest.fixture(scope="module")
def node_client():
    """The official Node client, installed once into .services/ (Node and npm from Debian)."""
    _node, npm = require(["node", "npm"], ["nodejs", "npm"], "The Node.js ClickHouse client test")
    package = NODE_CACHE / "node_modules" / "@clickhouse" / "client"
    if not package.exists():
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(npm), "install", "--no-audit", "--no-fund", "--prefix", str(NODE_CACHE), NODE_CLIENT],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_CACHE


NODE_SCRIPT = """
const { createClient } = require('@clickhouse/client')
const c = createClient({ url: process.env.URL, username: process.env.U, password: process.env.P })
;(async () => {
  const out = { ping: (await c.ping()).success }
  const rs = await c.query({ query: 'SELECT number AS n FROM numbers(5) WHERE number < {k:UInt32}',
                             format: 'JSONEachRow', query_params: { k: 3 } })
  out.rows = await rs.json()
  let streamed = 0
  for await (const rows of (await c.query({ query: 'SELECT number FROM numbers(50000)',
                                            format: 'JSONCompactEachRow' })).stream()) streamed += rows.length
  out.streamed = streamed
  try { await c.command({ query: 'CREATE TABLE node_probe (a Int8) ENGINE = Memory' }) }
  catch (e) { out.refused = e.code }
  await c.close()
  console.log(JSON.stringify(out))
})()
"""


def test_node_client_pings_queries_streams_and_is_refused_writes(worker, node_client):
    env = {
        **os.environ,
        "URL": worker["url"],
        "U": ANALYST,
        "P": ANALYST_PASSWORD,
        "NODE_PATH": str(node_client / "node_modules"),
    }
    got = subprocess.run(["node", "-e", NODE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout.splitlines()[-1]) == {
        "ping": True,
        "rows": [{"n": 0}, {"n": 1}, {"n": 2}],
        "streamed": 50000,
        "refused": "164",
    }


FORMATS_SQL = "SELECT number AS n, toString(number * 2) AS s, toDate('2024-01-01') + number AS d FROM numbers(3)"


@pytest.mark.parametrize(
    "fmt",
    [
        "TSV",
        "TSVWithNames",
        "CSV",
        "CSVWithNames",
        "JSON",
        "JSONEachRow",
        "JSONCompact",
        "Parquet",
        "Native",
        "RowBinary",
    ],
)
def test_each_format_answers_what_clickhouse_answers(worker, fmt):
    engine = subprocess.run(
        [sys.executable, "-c", "import chdb,sys; sys.stdout.buffer.write(chdb.query(sys.argv[1], sys.argv[2]).bytes())"]
        + [FORMATS_SQL, fmt],
        capture_output=True,
        check=True,
    ).stdout
    served = post(worker, FORMATS_SQL, default_format=fmt)
    assert served.status_code == 200 and served.headers["x-clickhouse-format"] == fmt
    assert _same(fmt, served.content, engine)
    in_clause = post(worker, f"{FORMATS_SQL} FORMAT {fmt}")  # the clause wins over the TSV default
    assert in_clause.headers["x-clickhouse-format"] == fmt and _same(fmt, in_clause.content, engine)


def _same(fmt: str, served: bytes, engine: bytes) -> bool:
    if fmt in ("JSON", "JSONCompact"):  # statistics (elapsed, rows read) differ from run to run
        return {**orjson.loads(served), "statistics": None} == {**orjson.loads(engine), "statistics": None}
    if fmt == "Parquet":
        return _buffer(served).read().equals(_buffer(engine).read())
    return served == engine


def _buffer(data: bytes):
    return pq.ParquetFile(io.BytesIO(data))


def test_query_id_is_echoed_or_made_and_database_param_applies(worker):
    r = post(worker, "SELECT currentDatabase()", query_id="probe-1", database="system")
    assert r.headers["x-clickhouse-query-id"] == "probe-1" and r.text == "system\n"
    assert post(worker, "SELECT currentDatabase()").text == "default\n"  # the next query is back in default
    assert uuid.UUID(post(worker, "SELECT 1").headers["x-clickhouse-query-id"])


# --- refusals ------------------------------------------------------------------------------------

REFUSED = [
    ("INSERT INTO usage_events (workspace_id) VALUES (1)", 164),
    ("CREATE TABLE probe (a Int8) ENGINE = Memory", 164),
    ("DROP TABLE usage_events", 164),
    ("ALTER TABLE usage_events DELETE WHERE 1", 164),
    ("OPTIMIZE TABLE usage_events FINAL", 164),
    ("SYSTEM STOP MERGES", 164),
    ("KILL QUERY WHERE 1", 164),
    ("SET max_threads = 1", 164),
    ("USE system", 164),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 497),
    ("SELECT file('/etc/passwd')", 497),
    ("SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')", 497),
    ("SELECT * FROM s3('http://127.0.0.1:1/b/k.csv', 'CSV', 'a String')", 497),
    ("SELECT * FROM remote('127.0.0.1', system.one)", 497),
    ("SELECT * FROM view(SELECT * FROM file('/etc/passwd', 'LineAsString'))", 497),
    ("SELECT 1 INTO OUTFILE '/tmp/sluice-outfile-probe'", 497),
    ("SELECT 1; DROP TABLE usage_events", 62),
    ("SELECT 1 SETTINGS readonly = 0", 164),
    (f"SELECT 1 SETTINGS max_execution_time = {MAX_EXECUTION_SECONDS * 40}", 452),
]


@pytest.mark.parametrize(("sql", "code"), REFUSED)
def test_writes_and_escapes_are_refused_with_clickhouse_codes(worker, sql, code):
    before = count(worker, "SELECT count() FROM system.tables WHERE database = 'default'")
    r = post(worker, sql)
    assert r.status_code in (400, 403) and r.headers["x-clickhouse-exception-code"] == str(code), r.text
    assert r.text.startswith(f"Code: {code}. DB::Exception: ")
    assert count(worker, "SELECT count() FROM system.tables WHERE database = 'default'") == before
    assert post(worker, "SELECT getSetting('readonly')").text == "2\n"
    assert not Path("/tmp/sluice-outfile-probe").exists()


def test_url_settings_cannot_lift_readonly_or_limits_and_do_not_persist(worker):
    r = post(worker, "SELECT 1", readonly="0")
    assert r.headers["x-clickhouse-exception-code"] == "164"
    r = post(worker, "SELECT 1", max_execution_time=str(MAX_EXECUTION_SECONDS * 40))
    assert r.headers["x-clickhouse-exception-code"] == "452"
    assert post(worker, "SELECT getSetting('max_threads')", max_threads="1").text == "1\n"
    assert post(worker, "SELECT getSetting('max_threads')").text != "1\n"
    with pytest.raises(DatabaseError, match="164"):
        analyst(worker).command("CREATE TABLE probe (a Int8) ENGINE = Memory")


def test_wrong_or_missing_credentials_are_refused(worker):
    wrong = post(worker, "SELECT 1", auth=(ANALYST, "wrong"))
    assert wrong.status_code == 403 and wrong.headers["x-clickhouse-exception-code"] == "516"
    internal = post(worker, "SELECT 1", auth=("sluice", "not-the-key"))
    assert internal.headers["x-clickhouse-exception-code"] == "516"
    # Analysts configured: nobody without credentials, not even from this machine.
    assert post(worker, "SELECT 1", auth=None).status_code in (401, 403)
    assert post(worker, "SELECT 1", auth=("sluice", worker["key"])).text == "1\n"


def test_a_peer_that_is_not_loopback_needs_credentials(worker):
    address = _non_loopback_address()
    url = f"http://{address}:{worker['port']}/"
    bare = httpx.post(url, content=b"SELECT 1")
    assert bare.status_code in (401, 403) and bare.headers["x-clickhouse-exception-code"] in ("194", "516")
    assert httpx.post(url, content=b"SELECT 1", auth=(ANALYST, ANALYST_PASSWORD)).text == "1\n"


def _non_loopback_address() -> str:
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split()
    return next(a for a in addresses if "." in a and not a.startswith("127."))


# --- limits --------------------------------------------------------------------------------------


def test_a_query_past_max_execution_time_fails_with_timeout_exceeded(worker):
    r = post(worker, "SELECT count() FROM numbers_mt(1000000000000)", max_execution_time=str(MAX_EXECUTION_SECONDS))
    assert r.headers["x-clickhouse-exception-code"] == "159" and "TIMEOUT_EXCEEDED" in r.text


def test_a_result_past_max_result_bytes_fails(worker):
    """The first blocks may be out before the limit is passed: then, as ClickHouse does, the
    exception ends the body and the stream breaks instead of finishing."""
    received = b""
    params = {"query": "SELECT number FROM numbers(10000000)"}
    with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012 - the break comes while reading
        with httpx.stream("GET", worker["url"] + "/", params=params, auth=(ANALYST, ANALYST_PASSWORD)) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received += chunk
    assert b"Code: 396. DB::Exception: " in received and b"TOO_MANY_ROWS_OR_BYTES" in received
    assert len(received) < MAX_RESULT_BYTES * 2


def test_the_worker_keeps_inserting_while_a_long_query_runs(worker):
    topics, ws = Topics.with_prefix(worker["env"]["SLUICE_KAFKA_TOPIC_PREFIX"]), int(time.time_ns() % 10**12)
    done = threading.Event()
    long = threading.Thread(
        target=lambda: (post(worker, "SELECT count() FROM numbers_mt(1000000000000)"), done.set()), daemon=True
    )
    long.start()
    records = [orjson.dumps(_usage(ws)) for _ in range(20)]
    asyncio.run(_produce(topics.usage, [(workspace_key(ws), r) for r in records]))
    deadline = time.monotonic() + WAIT_SECONDS
    sql = f"SELECT count() FROM usage_events WHERE workspace_id = {ws}"
    while (rows := count(worker, sql)) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rows == 20 and not done.is_set()  # the rows are in while the long query still runs
    long.join(WAIT_SECONDS)


def _usage(ws: int) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return {
        "event_id": str(uuid.uuid4()),
        "workspace_id": ws,
        "feature": "api_calls",
        "quantity": 1,
        "metadata": "",
        "idempotency_key": "",
        "occurred_at": now,
    }


async def _produce(topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


# --- python -m ingest query ---------------------------------------------------------------------


def ingest_query(worker, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest", "query", *args],
        cwd=ROOT,
        env=worker["env"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_ingest_query_reads_stdin_formats_and_pipes_tsv_without_header(worker):
    sql = "SELECT number AS n, toString(number * 2) AS twice FROM numbers(3)"
    piped = ingest_query(worker, stdin=sql)
    assert piped.returncode == 0 and piped.stdout == "0\t0\n1\t2\n2\t4\n", piped.stderr
    as_csv = ingest_query(worker, sql, "--format", "CSVWithNames")
    assert as_csv.stdout.splitlines() == ['"n","twice"', '0,"0"', '1,"2"', '2,"4"']
    clause = ingest_query(worker, sql + " FORMAT JSONEachRow", "--format", "CSV")
    assert [orjson.loads(line) for line in clause.stdout.splitlines()][0] == {"n": 0, "twice": "0"}


def test_ingest_query_reports_clickhouse_refusals_and_exits_non_zero(worker):
    refused = ingest_query(worker, "DROP TABLE usage_events")
    assert refused.returncode != 0 and "Code: 164" in refused.stderr
    missing = ingest_query(worker, "SELECT * FROM no_such_table")
    assert missing.returncode != 0 and "no_such_table" in missing.stderr and "Code: 60" in missing.stderr
