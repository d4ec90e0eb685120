"""A real Prometheus for the operations tests: Debian's `prometheus` package (Prometheus 2.42 and
its `promtool`), installed with apt-get on first use (tests/system_packages.py), never a downloaded release.

The package may try to start a system service of its own on port 9090; nothing here uses it. Each
test starts its own server on a free port with a data directory under the test's tmp dir.
"""

import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import yaml

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
PACKAGES = ["prometheus"]
ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
START_TIMEOUT = 60
# A Prometheus duration ("30s", "2m", "1h"); compound forms ("1m30s") are not used in alerts.yml.
DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
RANGE = re.compile(r"\[(\d+)(ms|s|m|h|d)\]")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROMTOOL), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def _seconds(amount: str, unit: str) -> float:
    return int(amount) * UNIT_SECONDS[unit]


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def scaled_rules(factor: float, source: Path = ALERTS) -> dict:
    """alerts.yml with every `for` and every range selector ([2m]) divided by factor (at least 1 s),
    for a live Prometheus that evaluates within a test's patience: the shipped rules, time shrunk."""
    rules = yaml.safe_load(source.read_text())

    def shrink_range(match: re.Match) -> str:
        return f"[{_duration(_seconds(match[1], match[2]) / factor)}]"

    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                matched = DURATION.match(rule["for"])
                assert matched, f"unexpected `for` {rule['for']!r} in {source}"
                rule["for"] = _duration(_seconds(matched[1], matched[2]) / factor)
            rule["expr"] = RANGE.sub(shrink_range, rule["expr"])
    return rules


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A Prometheus server of the test's own: config and rule file written to `workdir`."""

    def __init__(self, workdir: Path, config: dict, rules: dict):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {**config, "rule_files": [str(workdir / "rules.yml")]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.process: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        checked = promtool("check", "config", self.workdir / "prometheus.yml")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"prometheus not ready within {START_TIMEOUT} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def api(self, path: str, **params) -> dict | list:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]
