"""README stays true: its example queries run against the ClickHouse schema and answer on real-looking
rows, and its column reference names every column analysts see (its configuration tables:
tests/unit/test_readme.py)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

# A few stored events of workspace 1: two sessions (one a bounce) from two countries and channels.
SEED = """
INSERT INTO events (event_id, workspace_id, event, time, received_at, url, host, path, referrer_host,
    referrer_source, channel, visitor_id, session_id, browser, os, device, country, region, _topic, _partition,
    _offset)
SELECT generateUUIDv7(number), 1, if(number = 2, 'signup', 'pageview'), now64(3) - INTERVAL (10 - number) MINUTE,
    now64(3), 'https://shop.test/', 'shop.test', if(number < 3, '/pricing', '/'), if(number < 3, 'www.google.com', ''),
    if(number < 3, 'Google', ''), if(number < 3, 'Organic Search', 'Direct'), if(number < 3, 'v1', 'v2'),
    if(number < 3, 11, 12), 'Chrome', 'Windows', 'desktop', if(number < 3, 'DE', 'US'),
    if(number < 3, 'DE-BY', 'US-CA'), 'pixel', 0, number
FROM numbers(4)"""
# v1's pageview of /pricing as pixel.js measures it: two engagement events, 30 s + 12 s, 40 % then 80 %.
ENGAGEMENT = """
INSERT INTO events (event_id, workspace_id, event, time, received_at, url, host, path, properties, visitor_id,
    session_id, country, region, _topic, _partition, _offset)
SELECT generateUUIDv7(number), 1, if(number = 0, 'pageview', 'engagement'), now64(3) - INTERVAL (9 - number) MINUTE,
    now64(3), 'https://shop.test/pricing', 'shop.test', '/pricing',
    [
        '{"title":"Pricing","pageview_id":"00112233aabbccdd"}',
        '{"pageview_id":"00112233aabbccdd","engaged_ms":30000,"scroll_depth":40}',
        '{"pageview_id":"00112233aabbccdd","engaged_ms":12000,"scroll_depth":80}'
    ][number + 1], 'v1', 11, 'DE', 'DE-BY', 'pixel', 0, 100 + number
FROM numbers(3)"""


def run_in_chdb(tmp_path: Path, statements: list[str], queries: list[str]) -> list[list]:
    """Apply the schema, run `statements`, return each query's rows. In a child process: chdb
    holds one directory per process, and other tests open theirs."""
    script = (
        "import sys, json\n"
        "from storage.clickhouse import client as ch\n"
        f"c = ch.connect('chdb://{tmp_path}/ch')\n"
        "ch.apply_schema(c)\n"
        "work = json.loads(sys.stdin.read())\n"
        "for s in work['statements']:\n"
        "    c.command(s)\n"
        "print(json.dumps([[list(map(str, r)) for r in c.query(q).result_rows] for q in work['queries']]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        input=json.dumps({"statements": statements, "queries": queries}),
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def example_queries() -> list[str]:
    block = README.split("### Example queries", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    return [q.strip() for q in block.split(";") if q.strip().replace("\n", "").strip()]


def test_example_queries_run_and_the_analytics_ones_answer(tmp_path):
    queries = example_queries()
    assert len(queries) == 16
    answers = run_in_chdb(tmp_path, [SEED, ENGAGEMENT], queries)
    titles = [q.splitlines()[0] for q in queries]
    # Sessions, bounce rate, countries, channels, devices and time on page: each answers on the seeded rows.
    for title, rows in list(zip(titles, answers, strict=True))[10:]:
        assert rows, f"{title} found nothing"
    daily = answers[10]  # (a day's rows: the seeded sessions may straddle midnight)
    assert sum(int(row[1]) for row in daily) == 2
    entries = {row[0]: row[2] for row in answers[11]}
    assert entries == {"/pricing": "0.0", "/": "1.0"}, "the direct visit is a bounce, the searcher signed up"
    channels = {(row[0], row[1]): row[2] for row in answers[13]}
    assert channels == {("Organic Search", "Google"): "1", ("Direct", ""): "1"}
    countries = {row[0] for row in answers[12]}
    assert countries == {"DE", "US"}
    assert answers[15] == [["/pricing", "1", "42.0", "80.0"]], "one measured pageview: 42 s, 80 %"


def test_the_column_reference_names_every_column_of_every_table(tmp_path):
    [columns] = run_in_chdb(
        tmp_path,
        [],
        [
            "SELECT c.table, c.name FROM system.columns AS c JOIN system.tables AS t "
            "ON t.database = c.database AND t.name = c.table "
            "WHERE c.database = currentDatabase() AND t.engine != 'MaterializedView'"
        ],
    )
    reference = README.split("### Columns", 1)[1].split("\n### ", 1)[0]
    missing = sorted({f"{table}.{name}" for table, name in columns if f"`{name}`" not in reference})
    assert not missing, f"README's Columns section does not name: {missing}"
    tables = {table for table, _ in columns}
    assert all(f"`{table}`" in reference for table in tables), sorted(t for t in tables if f"`{t}`" not in reference)
