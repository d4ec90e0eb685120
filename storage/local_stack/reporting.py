"""What the stack tells the user: progress lines on stderr, and StackError for failures."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

LOG_TAIL_LINES = 20


class StackError(Exception):
    """A provisioning step failed; the message says what failed and what to do next."""


def say(message: str) -> None:
    # stderr, so `env` output on stdout stays clean for eval "$(...)".
    with contextlib.suppress(OSError):  # a closed terminal/pipe must not abort a start or stop
        print(f"[stack] {message}", file=sys.stderr, flush=True)


def shown(path: Path) -> str:
    """A path as short as possible for messages (relative to the cwd when inside it)."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else rel


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, indented, for quoting in an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"    (cannot read log: {exc})"
    return "\n".join("    " + line for line in text) or "    (log is empty)"
