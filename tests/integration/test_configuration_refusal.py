"""Every entry point refuses a bad value before it starts anything: exit code 1 and one line on stderr
naming the variable, the value and what is allowed (storage/config.py), never a traceback.

Real processes, as an operator starts them; a refusal comes before any service is reached, so a
regression that let one through would show as a start that does not end (the timeout).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP_SERVE = ["-m", "app", "serve"]
APP_RUN = ["-m", "app", "run"]
INGEST = ["-m", "ingest"]
DISPATCHER = ["-m", "ingest.webhooks.dispatcher"]
GRANIAN_FACTORY = ["-c", "from app.main import create_app; create_app()"]
NETWORKS = "comma-separated IP addresses or networks (CIDR)"

CASES = [
    # the shared section, in each kind of process
    (APP_SERVE, "SLUICE_LOG_LEVEL", "loud", "one of debug, info, warning, error, critical"),
    (INGEST, "DATABASE_URL", "mysql://db/sluice", "a URL (postgresql:// or postgres://)"),
    (DISPATCHER, "SLUICE_KAFKA_PARTITIONS", "0", "an integer ≥ 1"),
    # the API's
    (APP_SERVE, "SLUICE_PORT", "abc", "an integer from 1 to 65535"),
    (APP_RUN, "SLUICE_RATE_LIMITS", "maybe", "on or off (also 1/0, true/false, yes/no)"),
    (GRANIAN_FACTORY, "SLUICE_TRUSTED_PROXIES", "10.0.0.0/8,nonsense", NETWORKS),
    # the worker's
    (INGEST, "SLUICE_CONSUMER_BATCH_ROWS", "many", "an integer ≥ 1"),
    (APP_RUN, "SLUICE_EVENTS_TTL_DAYS", "-1", "an integer ≥ 1"),
    # the dispatcher's
    (DISPATCHER, "SLUICE_WEBHOOK_TIMEOUT_SECONDS", "soon", "a number > 0"),
    (DISPATCHER, "SLUICE_WEBHOOK_CA_BUNDLE", "/nonexistent/ca.pem", "on, off, or the path of a PEM file"),
    (APP_SERVE, "SLUICE_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33", NETWORKS),
    # the MCP gateway's
    (APP_SERVE, "SLUICE_MCP_ALLOW_STDIO", "sometimes", "on or off (also 1/0, true/false, yes/no)"),
    (GRANIAN_FACTORY, "SLUICE_MCP_TIMEOUT_SECONDS", "301", "a number > 0 and ≤ 300"),
]


@pytest.mark.parametrize("argv, name, value, allowed", CASES, ids=[f"{' '.join(c[0][1:])[:40]}-{c[1]}" for c in CASES])
def test_a_bad_value_stops_the_start_with_one_line(argv, name, value, allowed):
    env = {**os.environ, name: value}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"configuration error: {name} has value {value!r}; expected {allowed}\n"
    assert done.stdout == ""
