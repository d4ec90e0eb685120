"""The API's metrics summed over processes: the contract with prometheus_client's multiprocess mode
that storage/telemetry/metrics.py relies on, and the directory app/http/metrics.py chooses and keeps.

The real thing, granian with two workers answering scrapes, is tests/e2e/test_metrics.py's.
"""

import multiprocessing
import os

import pytest
from prometheus_client import CollectorRegistry, Counter, values
from prometheus_client.parser import text_string_to_metric_families

from app.http import metrics as exposition
from storage.compat import prometheus_client_internals
from storage.telemetry import metrics as telemetry
from storage.telemetry.metrics import ApiMetrics

GONE = 999_999_999  # above any pid_max: never a running process


@pytest.fixture
def directory(tmp_path, monkeypatch):
    """Multiprocess mode in `tmp_path` for this test only: the value class, store and variable are restored."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(prometheus_client_internals, "_store", prometheus_client_internals._store)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    telemetry.use_directory(tmp_path)
    return tmp_path


def scraped(directory) -> dict[tuple, float]:
    """(sample name, (label, value)…) → value, as a scrape of `directory` answers."""
    text = telemetry.exposition(directory).decode()
    families = text_string_to_metric_families(text)
    return {(s.name, *sorted(s.labels.items())): s.value for family in families for s in family.samples}


def test_metrics_made_after_use_directory_write_to_its_files(directory):
    # prometheus_client was imported long before: the value class is chosen again, as in a granian worker.
    counter = Counter("sluice_contract_checks", "A contract check", registry=None)
    counter.inc(3)
    assert (directory / f"counter_{os.getpid()}.db").exists()
    assert scraped(directory)[("sluice_contract_checks_total",)] == 3


def _child_observes(directory) -> None:
    metrics = ApiMetrics()
    metrics.route("/api/v1/pixel/track").observe("POST", 200, 0.002)
    metrics.route("/api/v1/pixel/track").observe("POST", 200, 0.002)
    metrics.spool(inflight=5, spool_bytes=100, pending=2)


def test_a_scrape_sums_every_process_and_drops_a_dead_ones_live_gauges(directory):
    metrics = ApiMetrics()
    metrics.route("/api/v1/pixel/track").observe("POST", 200, 0.002)
    metrics.spool(inflight=1, spool_bytes=10, pending=0)
    child = multiprocessing.get_context("fork").Process(target=_child_observes, args=(directory,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    before = scraped(directory)
    requests = ("sluice_http_requests_total", ("method", "POST"), ("route", "/api/v1/pixel/track"), ("status", "200"))
    assert before[requests] == 3
    # The child's own files, not its parent's: its gauges add to the parent's instead of replacing them.
    assert before[("sluice_producer_inflight_records",)] == 6 and before[("sluice_spool_bytes",)] == 110
    version, commit = telemetry.build()
    assert before[("sluice_build_info", ("commit", commit), ("process", "api"), ("version", version))] == 1
    telemetry.forget_process(directory, child.pid)
    after = scraped(directory)
    assert after[requests] == 3  # a dead process's counts stay: a total never goes down
    assert after[("sluice_producer_inflight_records",)] == 1 and after[("sluice_spool_bytes",)] == 10


def test_without_a_directory_given_each_server_gets_its_own_under_the_temporary_directory():
    parent = os.getppid()
    chosen = exposition.choose_directory({})
    assert chosen == exposition.base_directory() / f"{parent}-{exposition.start_time(parent)}"
    assert exposition.choose_directory({"PROMETHEUS_MULTIPROC_DIR": "/srv/metrics"}).as_posix() == "/srv/metrics"


def test_the_first_worker_of_a_server_removes_what_no_live_sibling_wrote(tmp_path):
    own, earlier = f"counter_{os.getpid()}.db", f"counter_{GONE}.db"
    for name in (own, earlier, f"gauge_livesum_{GONE}.db", ".server-1-2"):
        (tmp_path / name).write_bytes(b"")
    exposition.prepare_directory(tmp_path)
    mark = f".server-{os.getppid()}-{exposition.start_time(os.getppid())}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([own, mark])


def test_a_later_worker_keeps_a_dead_siblings_counts_and_drops_its_live_gauges(tmp_path):
    exposition.prepare_directory(tmp_path)  # the first worker
    for name in (f"counter_{GONE}.db", f"histogram_{GONE}.db", f"gauge_livesum_{GONE}.db", f"gauge_max_{GONE}.db"):
        (tmp_path / name).write_bytes(b"")
    exposition.prepare_directory(tmp_path)  # one started after a sibling died
    left = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert left == {f"counter_{GONE}.db", f"histogram_{GONE}.db", f"gauge_max_{GONE}.db"}


def test_directories_of_servers_that_are_gone_are_removed(tmp_path):
    parent = os.getppid()
    live = tmp_path / f"{parent}-{exposition.start_time(parent)}"
    gone, recycled = tmp_path / f"{GONE}-5", tmp_path / f"{parent}-1"  # recycled: same pid, another start
    for path in (live, gone, recycled):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"")
    exposition.remove_gone_servers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def test_a_registry_of_its_own_keeps_api_metrics_apart():
    one, two = ApiMetrics(CollectorRegistry()), ApiMetrics(CollectorRegistry())
    one.refused("pixel")
    refused = [(s.labels["policy"], s.value) for s in two.refusals.collect()[0].samples if s.name.endswith("_total")]
    assert refused == [("pixel", 0), ("key", 0), ("auth", 0)]
