"""The API's log as a collector reads it: `python -m app serve` with SLUICE_LOG_FORMAT=json writes
nothing but JSON lines, granian's own included, and exactly one access line per request, carrying
the request's id — even when granian's access log is asked for in its environment."""

import subprocess
import sys
import time

import httpx
import orjson

from tests.conftest import ROOT, _free_port, _wait_until_serving

WAIT_SECONDS = 30


def records(log) -> list[dict]:
    return [orjson.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_api_log_is_json_lines_with_one_access_line_per_request(server_env, tmp_path):
    port, log = _free_port(), tmp_path / "api.log"
    env = {
        **server_env,
        "SLUICE_PORT": str(port),
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_LOG_LEVEL": "info",
        "GRANIAN_LOG_ACCESS_ENABLED": "true",  # what `--no-access-log` and the API's own setup overrule
    }
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--workers", "1"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log)
        ids = [f"req_logs_{n}" for n in range(3)]
        for request_id in ids:
            assert httpx.get(url + "/healthz", headers={"X-Request-ID": request_id}).status_code == 200
        deadline = time.monotonic() + WAIT_SECONDS
        while not all(any(r.get("request_id") == i for r in records(log)) for i in ids):
            assert time.monotonic() < deadline, f"no access line for every request:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)
    lines = records(log)  # every line parses, or this raises
    assert {"_granian"} <= {r["logger"] for r in lines} and all(r["process"] == "api" for r in lines)
    assert not [r for r in lines if r["logger"] == "granian.access"]
    access = [r for r in lines if r["logger"] == "sluice.access"]  # also the readiness wait's requests
    assert sorted(r["request_id"] for r in access if r["request_id"] in ids) == ids, access
    assert all(r["route"] == "/healthz" and r["status"] == 200 and r["request_id"] for r in access), access
