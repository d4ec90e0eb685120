"""README stays true: its configuration tables are the ones storage/config.py generates."""

import re
import subprocess
import sys
from pathlib import Path

from storage.config import markdown

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- BEGIN: python -m storage.config --markdown -->\n"
END = "<!-- END: python -m storage.config --markdown -->"


def configuration_section() -> str:
    return (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]


def test_configuration_tables_equal_the_generated_ones():
    """Names, defaults, what is allowed and meanings: regenerate with `python -m storage.config --markdown`."""
    section = configuration_section()
    assert BEGIN in section and END in section
    assert section.split(BEGIN, 1)[1].split(END, 1)[0] == markdown()


def test_the_command_prints_the_same_tables():
    printed = subprocess.run(
        [sys.executable, "-m", "storage.config", "--markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert printed == markdown()


def test_the_local_stack_s_own_variables_are_documented():
    """storage/local_stack reads its provisioning variables itself; README names them beside the tables."""
    code = "".join(p.read_text() for p in (ROOT / "storage" / "local_stack").rglob("*.py"))
    own = set(re.findall(r'environ\.get\("(SLUICE_[A-Z_]+)"', code))
    assert own and all(f"`{name}`" in configuration_section() for name in own)
