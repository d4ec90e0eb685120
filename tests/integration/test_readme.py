"""README stays true: its example queries run against the ClickHouse schema (its configuration
tables: tests/unit/test_readme.py)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_queries_run_against_the_schema(tmp_path):
    """Each of README's example queries runs on a fresh ClickHouse with the schema applied.
    In a child process: chdb holds one directory per process, and other tests open theirs."""
    text = (ROOT / "README.md").read_text().split("### Example queries", 1)[1]
    block = text.split("```sql", 1)[1].split("```", 1)[0]
    queries = [q.strip() for q in block.split(";") if q.strip().replace("\n", "").strip()]
    assert len(queries) == 10
    script = (
        "import sys, json\n"
        "from storage.clickhouse import client as ch\n"
        f"c = ch.connect('chdb://{tmp_path}/ch')\n"
        "ch.apply_schema(c)\n"
        "for q in json.loads(sys.stdin.read()):\n"
        "    c.query(q)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, input=json.dumps(queries), text=True, capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
