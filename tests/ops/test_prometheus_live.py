"""The alert rules in a real Prometheus scraping a real stack: an API server, an ingest worker and a
webhook dispatcher of this test's own, under continuous load. The worker is stopped: the ingest
lag alert fires; started again: it resolves. Read through Prometheus' HTTP API, as Alertmanager
or a person would.

The rules are ops/prometheus/alerts.yml with every duration halved (tests/ops/prometheus.py's
scaled_rules), scraped and evaluated every second. The dispatcher polls the consumer group's lag
every 15 s, so halved windows still hold several polls.

SLUICE_DASHBOARD_PNG=path draws the dashboard's main panels over the run there (ops/render_dashboard.py).
"""

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from storage.postgres import domains
from tests.conftest import ROOT, running_api
from tests.ops.catalogue import METRICS, series_names
from tests.ops.prometheus import Prometheus, free_port, scaled_rules
from tests.webhook_receiver import Answer

TIME_FACTOR = 2
FREE_BUCKET = 60  # requests a free-tier key may make at once
SCRAPE = "1s"
JOBS = {"sluice-api": "api", "sluice-worker": "worker", "sluice-dispatcher": "dispatcher"}
# Generous: a full CI run shares this 2-core machine. Conditions are polled, never slept on.
START_TIMEOUT = 90
ALERT_TIMEOUT = 300
LAG_ALERT = "SluiceConsumerLagGrowing"
GROUP_LAG = "sum(sluice_kafka_consumer_group_lag_records)"
DOWN_ALERT = "SluiceReadinessFailing"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
CRAWLER = "Googlebot/2.1"
EVENTS_PER_REQUEST = 10
PAUSE_SECONDS = 0.1
RENDER = ROOT / "ops" / "render_dashboard.py"
# Labels Prometheus adds to every series, and the histogram's.
TARGET_LABELS = {"__name__", "job", "instance"}


def wait_for(condition, timeout: float, what: str, interval: float = 1.0):
    """condition()'s first truthy value, polled until `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(interval)


class Service:
    """A Sluice process of the test's own (`python -m …`), which it may stop and start again."""

    def __init__(self, module: str, env: dict, log_path: Path):
        self.module, self.env, self.log_path = module, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Service":
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def running(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-3000:]
        return True


class Traffic(threading.Thread):
    """Pixel events posted continuously, now and then a crawler's (dropped as a bot), and a new API key
    (an outbox event for webhooks)."""

    def __init__(self, api: str, host: str, auth: dict):
        super().__init__(daemon=True)
        self.api, self.host, self.auth = api, host, auth
        self.done = threading.Event()
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        with httpx.Client(base_url=self.api + "/api/v1", timeout=30) as client:
            n = 0
            while not self.done.is_set():
                batch = [{"event": "pageview", "url": f"https://{self.host}/p/{n + i}"} for i in range(10)]
                self.record(client.post("/pixel/track", json=batch, headers={"User-Agent": CHROME}))
                if n % 100 == 0:
                    bot = {"event": "pageview", "url": f"https://{self.host}/robots"}
                    self.record(client.post("/pixel/track", json=bot, headers={"User-Agent": CRAWLER}))
                if n % 200 == 0:
                    self.record(client.post("/api-keys", json={"name": f"k{n}"}, headers=self.auth))
                n += EVENTS_PER_REQUEST
                self.done.wait(PAUSE_SECONDS)

    def record(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1

    def stop(self) -> None:
        self.done.set()
        self.join(60)


def scrape_config(targets: dict[str, str]) -> dict:
    return {
        "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE, "evaluation_interval": SCRAPE},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]} for job, address in targets.items()
        ],
    }


def answers_metrics(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/metrics", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def alerts(prometheus: Prometheus, name: str, state: str | None = None) -> list[dict]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] == name and state in (None, a["state"])]


def worker_down(prometheus: Prometheus) -> list[dict]:
    return [a for a in alerts(prometheus, DOWN_ALERT, "firing") if a["labels"]["job"] == "sluice-worker"]


def targets_up(prometheus: Prometheus) -> dict[str, str]:
    active = prometheus.api("targets", state="active")["activeTargets"]
    return {t["labels"]["job"]: t["health"] for t in active}


@pytest.fixture
def stack_env(server_env, https_receiver, tmp_path):
    run = uuid.uuid4().hex[:8]
    return {
        **server_env,
        "SLUICE_KAFKA_TOPIC_PREFIX": f"sluice-ops-{run}.",
        "SLUICE_CONSUMER_GROUP": f"sluice-ops-{run}",
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "SLUICE_SPOOL_DIR": str(tmp_path / "spool"),
        "SLUICE_PIXEL_RATE_LIMIT": "60000000",
        "SLUICE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SLUICE_WEBHOOK_CA_BUNDLE": https_receiver.ca_path,
        "SLUICE_WORKER_METRICS": f"127.0.0.1:{free_port()}",
        "SLUICE_DISPATCHER_METRICS": f"127.0.0.1:{free_port()}",
        "SLUICE_LOG_LEVEL": "info",
    }


@pytest.fixture
def failing_webhook(tenants, https_receiver, stack_env):
    """A workspace with a site, a key, and a webhook endpoint that answers 500: its deliveries retry."""
    workspace = tenants.workspace()
    host = f"site-{uuid.uuid4().hex[:8]}.example"
    tenants.run(lambda pool: domains.create_domain(pool, workspace["id"], host, {}))
    auth = {"Authorization": f"Bearer {tenants.key(workspace['id'])}"}
    where = f"/{uuid.uuid4().hex[:12]}/ops"
    https_receiver.script(where, Answer(500))
    return host, auth, https_receiver.url(where, host="localhost")


def test_lag_alert_fires_while_the_worker_is_stopped_and_resolves_once_it_is_back(
    installed_prometheus, stack_env, failing_webhook, tenants, tmp_path
):
    host, auth, hook_url = failing_webhook
    worker = Service("ingest", stack_env, tmp_path / "worker.log")
    dispatcher = Service("ingest.webhooks.dispatcher", stack_env, tmp_path / "dispatcher.log")
    (tmp_path / "prometheus").mkdir()
    with running_api(stack_env, tmp_path) as api:
        created = httpx.post(f"{api}/api/v1/webhooks", json={"url": hook_url, "events": ["api_key.*"]}, headers=auth)
        assert created.status_code == 201, created.text
        targets = {
            "sluice-api": api.removeprefix("http://"),
            "sluice-worker": stack_env["SLUICE_WORKER_METRICS"],
            "sluice-dispatcher": stack_env["SLUICE_DISPATCHER_METRICS"],
        }
        prometheus = Prometheus(tmp_path / "prometheus", scrape_config(targets), scaled_rules(TIME_FACTOR))
        traffic = Traffic(api, host, auth)
        try:
            worker.start()
            dispatcher.start()
            for job, address in targets.items():
                wait_for(lambda a=address: answers_metrics(a), START_TIMEOUT, f"{job}'s /metrics at {address}")
            prometheus.start()
            started = time.time()
            traffic.start()
            check_every_process_is_up_and_says_what_it_runs(prometheus)
            spend_a_free_keys_budget(api, tenants)
            # Healthy first: the pipeline flows, Prometheus holds polls of the lag, and the alert is silent.
            wait_for(
                lambda: prometheus.query("sum(sluice_consumer_rows_inserted_total) > 0"),
                START_TIMEOUT,
                "rows inserted by the worker",
            )
            wait_for(
                lambda: prometheus.query("min(count_over_time(sluice_kafka_consumer_group_lag_records[5m])) >= 20"),
                START_TIMEOUT,
                "20 s of the consumer group's lag in Prometheus",
            )
            # The worker's start (ClickHouse, the group's join) leaves a lag behind it to catch up.
            wait_for(lambda: prometheus.query(f"{GROUP_LAG} < 1000"), ALERT_TIMEOUT, "the worker catching up")
            assert alerts(prometheus, LAG_ALERT, "firing") == [], "the lag alert fired while the worker kept up"

            worker.stop()
            stopped = time.time()
            [firing] = wait_for(lambda: alerts(prometheus, LAG_ALERT, "firing"), ALERT_TIMEOUT, "the lag alert")
            assert firing["labels"]["group"] == stack_env["SLUICE_CONSUMER_GROUP"]
            assert firing["labels"]["severity"] == "critical" and float(firing["value"]) > 1000
            assert firing["annotations"]["runbook"]
            wait_for(lambda: worker_down(prometheus), ALERT_TIMEOUT, "the worker's target down")

            worker.start()
            resumed = time.time()
            wait_for(lambda: not alerts(prometheus, LAG_ALERT) or None, ALERT_TIMEOUT, "the lag alert resolved")
            wait_for(lambda: not worker_down(prometheus) or None, ALERT_TIMEOUT, "the worker's target back")
            worker.running()
            dispatcher.running()
            # A little of the recovered state for the picture: a poll of the lag after it fell.
            low = f"{GROUP_LAG} < 1000 and on () vector(time()) > {resumed + 30}"
            wait_for(
                lambda: prometheus.query(low),
                ALERT_TIMEOUT,
                "the lag low again",
            )
            traffic.stop()
            assert set(traffic.statuses) <= {200, 201}, traffic.statuses
            assert alerts(prometheus, "SluiceHighErrorRate") == []
            assert alerts(prometheus, "SluiceRedisFallbackActive") == []
            draw(prometheus, started, time.time(), [(stopped, "worker stopped"), (resumed, "worker started")], tmp_path)
            check_the_series_are_the_catalogued_ones(prometheus)
        finally:
            if traffic.is_alive():
                traffic.stop()
            prometheus.stop()
            worker.stop()
            dispatcher.stop()


def check_every_process_is_up_and_says_what_it_runs(prometheus: Prometheus) -> None:
    wait_for(lambda: set(targets_up(prometheus).values()) == {"up"} or None, START_TIMEOUT, "every target up")
    assert set(targets_up(prometheus)) == set(JOBS)
    info = wait_for(
        lambda: (found := prometheus.query("sluice_build_info == 1")) and len(found) >= len(JOBS) and found,
        START_TIMEOUT,
        "sluice_build_info of every process",
    )
    by_job = {series["metric"]["job"]: series["metric"] for series in info}
    assert set(by_job) == set(JOBS) and len(info) == len(JOBS), info
    for job, process in JOBS.items():
        labels = by_job[job]
        assert labels["process"] == process and labels["version"] and labels["commit"], labels


def spend_a_free_keys_budget(api: str, tenants) -> None:
    """Requests with a free-tier key until one is refused (429): a refusal for the metrics to count."""
    auth = {"Authorization": f"Bearer {tenants.key(tenants.workspace(tier='free')['id'])}"}
    with httpx.Client(base_url=api + "/api/v1", headers=auth, timeout=30) as client:
        statuses = [client.get("/workspaces").status_code for _ in range(FREE_BUCKET + 10)]
    assert 429 in statuses, statuses


def check_the_series_are_the_catalogued_ones(prometheus: Prometheus) -> None:
    """Every sluice_ series Prometheus scraped has a catalogued name, labels and process; every
    catalogued metric was scraped from some process."""
    names = series_names()
    seen, problems = set(), set()
    for series in prometheus.api("series", **{"match[]": '{__name__=~"sluice_.*"}'}):
        name = series["__name__"]
        if name not in names:
            problems.add(f"{name} served by {series['job']}, not catalogued (tests/ops/catalogue.py)")
            continue
        metric = METRICS[names[name]]
        labels = set(series) - TARGET_LABELS - ({"le"} if name.endswith("_bucket") else set())
        if labels != set(metric.labels):
            problems.add(f"{name} has labels {sorted(labels)}, catalogued {sorted(metric.labels)}")
        if metric.process not in ("every", JOBS[series["job"]]):
            problems.add(f"{name} served by {series['job']}, catalogued for the {metric.process}")
        seen.add(names[name])
    problems |= {f"{name} catalogued, but no process served it" for name in set(METRICS) - seen}
    assert not problems, "\n".join(sorted(problems))


def draw(prometheus: Prometheus, start: float, end: float, marks: list, tmp_path: Path) -> None:
    """The dashboard's main panels over the run, collected by ops/render_dashboard.py (drawn only
    when SLUICE_DASHBOARD_PNG names a file: matplotlib is a bench dependency)."""
    saved = tmp_path / "run.json"
    command = [sys.executable, str(RENDER), "--prometheus", prometheus.url, "--start", str(start)]
    command += ["--end", str(end), "--step", "2", "--rate-interval", "10s", "--save", str(saved)]
    command += [f"--mark={at}={label}" for at, label in marks]
    if png := os.environ.get("SLUICE_DASHBOARD_PNG"):
        command += ["--out", str(ROOT / png)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert saved.stat().st_size > 0
