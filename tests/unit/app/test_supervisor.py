"""The supervisor's restart policy: backoff, its reset, and what counts as a crash loop."""

import os
import subprocess
import sys
from pathlib import Path

from app.cli.supervisor import BACKOFF_MAX_SECONDS, CRASH_LOOP_EXITS, ExitHistory, restart_delay

ROOT = Path(__file__).resolve().parents[3]


def delays(run_seconds: float, exits: int) -> list[float | None]:
    """The delays a child gets that exits `run_seconds` after each start, `exits` times."""
    child, now, found = ExitHistory(), 0.0, []
    for _ in range(exits):
        child.started_at = now
        now += run_seconds
        delay = restart_delay(child, now)
        found.append(delay)
        if delay is None:
            break
        now += delay
    return found


def test_child_dying_at_once_is_restarted_with_doubling_delays_then_called_a_crash_loop():
    assert delays(0.5, 10) == [1, 2, 4, 8, None]
    assert CRASH_LOOP_EXITS == 5


def test_child_that_ran_stably_starts_again_after_one_second():
    assert delays(61, 10) == [1] * 10


def test_child_failing_less_often_than_a_loop_keeps_restarting_at_most_every_30_s():
    assert delays(55, 9) == [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert BACKOFF_MAX_SECONDS == 30


CRASH_LOOP = """
import sys
from app.cli import supervisor
supervisor.BACKOFF_FIRST_SECONDS = 0.01  # the policy's shape, without its real seconds
sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
sys.exit(supervisor.run_children({"crasher": [sys.executable, "-c", "raise SystemExit(3)"],
                                  "sleeper": [sys.executable, "-c", sleeper, sys.argv[1]]}))
"""


def test_crash_loop_stops_the_others_and_says_which_child(tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    done = subprocess.run(
        [sys.executable, "-c", CRASH_LOOP, str(pid_file)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    for n in range(1, CRASH_LOOP_EXITS):
        assert f"[run] crasher exited with 3; restarting in {0.01 * 2 ** (n - 1):g} s (restart {n})" in done.stderr
    assert (
        "[run] crasher exited with 3: 5 exits, each within 60 s of the last, is a crash loop; "
        "stopping the others (its log is above)"
    ) in done.stderr
    assert not os.path.exists(f"/proc/{int(pid_file.read_text())}")  # stopped and reaped
