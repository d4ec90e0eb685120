"""README stays true: its configuration table names every variable the settings read."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_table_lists_every_environment_variable():
    code = "".join(p.read_text() for package in ("app", "ingest") for p in (ROOT / package).rglob("*.py"))
    variables = set(re.findall(r'(?:env\.get|environ\.get|getenv|_int|_flag)\("([A-Z_]+)"', code))
    assert {"DATABASE_URL", "SLUICE_PORT"} <= variables
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = sorted(v for v in variables if f"| `{v}` |" not in table)
    assert not missing, f"README configuration table lacks {missing}"
