"""Authenticated GET /api/v1/workspaces/{id} next to hello-world: now part of bench/http_api.py.

Kept so that existing habits work: runs ``bench/http_api.py --only workspace`` with the same
options (``--quick``, ``--rounds``, ``--duration``, ``--no-latency``, ``--out``).
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).with_name("http_api.py")
    os.execv(sys.executable, [sys.executable, str(script), "--only", "workspace", *sys.argv[1:]])
