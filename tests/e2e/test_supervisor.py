"""`python -m app run` under fire: each child killed with SIGKILL in turn is started again while
the others keep serving; SIGTERM then stops everything.

The run has its own port, Kafka topics, consumer group, chdb directory and spool, and reads the
test database; children are found through /proc.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, _free_port

START_TIMEOUT_SECONDS = 90


def children_of(pid: int) -> dict[int, str]:
    """Live (not zombie) children of `pid`: pid → command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = command
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, what: str, seconds: float = START_TIMEOUT_SECONDS):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Run:
    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process, self.url, self.log = process, url, log
        self.groups: set[int] = set()  # every child's process group seen, to stop whatever is left

    def child(self, marker: str) -> int | None:
        """The pid of the child whose command line ends with `marker`."""
        children = children_of(self.process.pid)
        self.groups.update(children)
        return next((pid for pid, cmd in children.items() if cmd.endswith(marker)), None)

    def api_workers(self) -> list[int]:
        server = self.child("app.main:create_app")
        return sorted(children_of(server)) if server else []

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def serves(self, headers: dict) -> bool:
        """/healthz and an authenticated GET, each on a new connection. Slow is still serving: on a
        loaded 2-core machine a worker's answer (or a respawned one's start) can take seconds."""
        try:
            health = httpx.get(self.url + "/healthz", timeout=30)
            listed = httpx.get(self.url + "/api/v1/workspaces", headers=headers, timeout=30)
        except httpx.TransportError:
            return False
        return health.json() == {"status": "ok"} and listed.status_code == 200 and bool(listed.json()["data"])


@pytest.fixture
def run(server_env, tmp_path):
    port, name = _free_port(), uuid.uuid4().hex[:8]
    env = {
        **server_env,
        "SLUICE_PORT": str(port),
        "SLUICE_WORKERS": "2",
        "SLUICE_LOG_LEVEL": "info",
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-test-run-{name}.",
        "SLUICE_CONSUMER_GROUP": f"sluice-test-run-{name}",
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "SLUICE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    supervised = Run(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_for(
            lambda: (
                all(line in supervised.text() for line in ("partitions assigned", "webhook dispatcher started"))
                and len(supervised.api_workers()) == 2
                and supervised.healthy()
            ),
            "the run to start its children",
        )
        yield supervised
    finally:
        supervised.groups.update(children_of(process.pid))
        if process.poll() is None:
            process.kill()
            process.wait()
        for pgid in supervised.groups:  # the children's groups are their own: a failed test leaves no process
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def kill_and_see_restarted(run: Run, headers: dict, marker: str, name: str) -> None:
    """SIGKILL the child whose command line holds marker; the API serves meanwhile and a new one starts."""
    killed = run.child(marker)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not alive(killed), f"the {name} to die")
    assert all(run.serves(headers) for _ in range(5)), f"the API stopped serving when the {name} died"
    restarted = wait_for(lambda: (run.child(marker) or killed) != killed and run.child(marker), f"a new {name}")
    assert f"[run] {name} exited with -9; restarting in 1 s (restart 1)" in run.text()
    assert alive(restarted) and run.process.poll() is None


def test_each_killed_child_is_restarted_while_the_others_serve(run, tenant):
    _, headers = tenant
    assert run.serves(headers)

    for marker, name in (("-m ingest", "ingest worker"), ("-m ingest.webhooks.dispatcher", "webhook dispatcher")):
        kill_and_see_restarted(run, headers, marker, name)
    wait_for(lambda: run.text().count("partitions assigned") >= 2, "the new ingest worker to consume")
    wait_for(lambda: run.text().count("webhook dispatcher started") >= 2, "the new webhook dispatcher to start")

    # One of granian's workers: the other serves meanwhile, and granian starts a new one.
    workers = run.api_workers()
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: not alive(workers[0]), "the API worker to die")
    assert all(run.serves(headers) for _ in range(5)), "the API stopped serving when one worker died"
    wait_for(lambda: len(run.api_workers()) == 2 and workers[0] not in run.api_workers(), "a new API worker")

    # The API server itself: down for a moment, then started again without its old workers.
    server, workers = run.child("app.main:create_app"), run.api_workers()
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: (run.child("app.main:create_app") or server) != server, "a new API server")
    assert not any(alive(pid) for pid in workers), "the killed server's workers were left running"
    wait_for(lambda: run.serves(headers), "the API to serve again")
    assert "[run] API server exited with -9; restarting in 1 s (restart 1)" in run.text()
    assert run.process.poll() is None

    everyone = list(children_of(run.process.pid)) + run.api_workers()
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(60) == 0
    assert not any(alive(pid) for pid in everyone)
    assert "[run] stopping (waiting for in-flight events to be flushed)" in run.text()
