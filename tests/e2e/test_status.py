"""`python -m app status` against what runs: the test API server, the session's ingest worker and a
webhook dispatcher of this module; every line ok and exit 0, and a process that does not answer is
a failing line with exit 1."""

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, _free_port

START_TIMEOUT_SECONDS = 60
LINE_NAMES = (
    "postgres",
    "redis",
    "kafka",
    "clickhouse",
    "api",
    "worker",
    "dispatcher",
    "consumer lag",
    "spool",
    "webhooks",
    "last insert",
)


def wait_for_metrics(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        assert process.poll() is None, f"exited with {process.returncode}; log:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer; log:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def dispatcher_metrics(server_env, tmp_path_factory):
    """A webhook dispatcher on the test database, serving its metrics on a port of its own: host:port."""
    address = f"127.0.0.1:{_free_port()}"
    log = tmp_path_factory.mktemp("dispatcher") / "dispatcher.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest.webhooks.dispatcher"],
            cwd=ROOT,
            env={**server_env, "SLUICE_DISPATCHER_METRICS": address},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_metrics(f"http://{address}/metrics", process, log)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def worker_metrics(ingest_worker):
    """Where the session's ingest worker serves its metrics, as it logged at start: host:port."""
    found = re.search(r"worker metrics on http://(\S+?)/metrics", ingest_worker["log"].read_text())
    assert found, f"the worker logged no metrics address:\n{ingest_worker['log'].read_text()[-3000:]}"
    return found.group(1)


def status(env: dict) -> tuple[int, dict[str, str], str]:
    """(exit code, line name → its state and detail, the whole screen)."""
    done = subprocess.run(
        [sys.executable, "-m", "app", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    lines = {}
    for text in done.stdout.splitlines():
        for name in LINE_NAMES:
            if text.startswith(name + " "):
                lines[name] = text[len(name) :].strip()
    return done.returncode, lines, done.stdout + done.stderr


@pytest.fixture
def status_env(server_env, api, worker_metrics, dispatcher_metrics):
    return {
        **server_env,
        "SLUICE_API_URL": api,
        "SLUICE_WORKER_METRICS": worker_metrics,
        "SLUICE_DISPATCHER_METRICS": dispatcher_metrics,
    }


def test_status_shows_every_line_ok_and_exits_0_when_all_runs(status_env, api):
    code, lines, screen = status(status_env)
    assert code == 0, screen
    assert list(lines) == list(LINE_NAMES), screen
    assert all(state.startswith("ok ") for state in lines.values()), screen
    assert lines["api"].endswith(f"ready at {api}, 1 worker(s)") or f"ready at {api}, 1 worker(s)," in lines["api"]
    assert "\033[" not in screen  # no colour when no person reads


def test_a_process_whose_metrics_do_not_answer_is_a_failing_line_and_exit_1(status_env):
    nobody = f"127.0.0.1:{_free_port()}"
    code, lines, screen = status({**status_env, "SLUICE_DISPATCHER_METRICS": nobody})
    assert code == 1, screen
    assert lines["dispatcher"] == f"FAIL     http://{nobody}/metrics does not answer", screen
    assert "python -m ingest.webhooks.dispatcher" in screen  # the hint: what to start
    assert lines["consumer lag"].startswith("ok "), screen  # the worker's own view stands in
    assert lines["webhooks"].startswith("unknown "), screen
