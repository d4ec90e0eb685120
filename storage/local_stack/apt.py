"""Installing missing server binaries (Postgres, Redis) with apt-get."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from .processes import is_root
from .reporting import StackError, say


def apt_install(packages: list[str]) -> None:
    names = " ".join(packages)
    if is_root():
        prefix = []
    elif shutil.which("sudo"):
        prefix = ["sudo"]
    else:
        raise StackError(f"{names} not installed and we are not root; run: sudo apt-get install -y {names}")
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]  # never stop at a debconf prompt
    say(f"installing {names} with apt-get (first run only)...")
    started = time.monotonic()
    for args in (["apt-get", "-q", "update"], ["apt-get", "-q", "install", "-y", *packages]):
        # apt's chatter goes to stderr: stdout may be captured by the caller.
        if subprocess.run(prefix + env_prefix + args, stdout=sys.stderr).returncode != 0:
            raise StackError(
                f"`{' '.join(args)}` failed (output above); fix apt (network? dpkg lock held by another "
                f"apt?) and retry, or install by hand: apt-get install -y {names}"
            )
    say(f"installed {names} in {time.monotonic() - started:.1f} s")
