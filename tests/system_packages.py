"""What some tests need from the system beyond the virtualenv (Chromium, Prometheus, Node.js):
Debian packages installed with apt-get on first use, as `make test` installs Postgres and Redis
(storage/local_stack/apt.py), or the test fails saying what to install."""

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from storage.local_stack.apt import apt_install
from storage.local_stack.reporting import StackError


def find(binary: str | Path) -> Path | None:
    """An absolute path when it is executable; a bare name as PATH finds it."""
    if os.path.isabs(binary):
        return Path(binary) if os.access(binary, os.X_OK) else None
    found = shutil.which(binary)
    return Path(found) if found is not None else None


def require(binaries: Sequence[str | Path], packages: Sequence[str], purpose: str) -> list[Path]:
    """The binaries' paths, in order. When one is missing, `packages` are installed with apt-get;
    when that cannot be done, the calling test fails with what to install. `purpose` names who
    needs them, as in "The browser tests"."""
    missing = [str(b) for b in binaries if find(b) is None]
    if missing:
        sudo = "sudo " if os.geteuid() != 0 else ""
        command = f"{sudo}apt-get install -y {' '.join(packages)}"
        if shutil.which("apt-get") is None:
            pytest.fail(
                f"{purpose} cannot run without {' and '.join(missing)}, and there is no apt-get here to "
                f"install it: install the equivalent of Debian's {' '.join(packages)}, then try again."
            )
        try:
            apt_install(list(packages))
        except StackError as exc:
            pytest.fail(
                f"{purpose} cannot run without {' and '.join(missing)}, and installing it failed: {exc}\n"
                f"Install it by hand with `{command}`, then try again."
            )
        still = [str(b) for b in binaries if find(b) is None]
        if still:
            pytest.fail(
                f"{purpose} cannot run without {' and '.join(still)}, which `{command}` did not provide: "
                "is it installed somewhere else on this system?"
            )
    return [path for b in binaries if (path := find(b)) is not None]
