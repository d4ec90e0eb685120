"""Contract of storage/compat/prometheus_client_internals.py: what its values write, a scrape by
prometheus_client's own MultiProcessCollector reads, across processes; and its counting and timing
count exactly what Counter.inc and Histogram.observe would."""

import multiprocessing
import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from storage.compat import prometheus_client_internals as internals

BOUNDS = (0.001, 0.01, 0.1, 1.0)
# Below the first bound, on bounds, between them and past the last finite one.
OBSERVED = (0.0005, 0.001, 0.0011, 0.01, 0.5, 1.0, 7.0)


@pytest.fixture
def directory(tmp_path, monkeypatch):
    """install_mmap_values(tmp_path) for this test only: value class, store and variable restored."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(internals, "_store", internals._store)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    internals.install_mmap_values(tmp_path)
    return tmp_path


def samples(text: bytes) -> dict[tuple, float]:
    families = text_string_to_metric_families(text.decode())
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in families
        for s in family.samples
        if not s.name.endswith("_created")
    }


def scrape(directory) -> dict[tuple, float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return samples(generate_latest(registry))


def observe_all(registry=None, fast: bool = False):
    counter = Counter("c", "c", ["k"], registry=registry).labels("x")
    histogram = Histogram("h_seconds", "h", ["k"], registry=registry, buckets=BOUNDS).labels("x")
    count, timing = (internals.counting(counter), internals.timing(histogram)) if fast else (counter.inc, histogram)
    for seconds in OBSERVED:
        count(2)
        timing.observe(seconds)
    return timing


def plainly_observed() -> dict[tuple, float]:
    """What prometheus_client's own classes count for OBSERVED, in memory (whatever ValueClass is now)."""
    saved, values.ValueClass = values.ValueClass, values.MutexValue
    try:
        registry = CollectorRegistry()
        observe_all(registry)
        return samples(generate_latest(registry))
    finally:
        values.ValueClass = saved


def test_counting_and_timing_count_what_inc_and_observe_would():
    own, fast = CollectorRegistry(), CollectorRegistry()
    observe_all(own)
    observe_all(fast, fast=True)
    expected = samples(generate_latest(own))
    assert samples(generate_latest(fast)) == expected
    assert expected[("h_seconds_bucket", ("k", "x"), ("le", "0.01"))] == 4  # an observation on a bound is in it


def test_a_scrape_reads_what_the_values_write(directory):
    assert isinstance(observe_all(None, fast=True), internals.MmapTiming)  # its writes, not the values'
    Gauge("g_sum", "g", registry=None, multiprocess_mode="livesum").set(3)
    Gauge("g_max", "g", registry=None, multiprocess_mode="livemax").set(1)
    Gauge("info", "i", ["v"], registry=None, multiprocess_mode="max").labels("1").set(1)
    scraped = scrape(directory)
    assert {k: v for k, v in scraped.items() if k[0].startswith(("c_", "h_"))} == plainly_observed()
    assert scraped[("g_sum",)] == 3 and scraped[("g_max",)] == 1 and scraped[("info", ("v", "1"))] == 1
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        f"{kind}_{os.getpid()}.db" for kind in ("counter", "histogram", "gauge_livesum", "gauge_livemax", "gauge_max")
    )


def _count_in_child() -> None:
    internals.counting(Counter("forked", "f", registry=None))(5)


def test_a_forked_child_writes_files_of_its_own(directory):
    counter = Counter("forked", "f", registry=None)
    internals.counting(counter)(1)
    child = multiprocessing.get_context("fork").Process(target=_count_in_child)
    child.start()
    child.join(30)
    assert child.exitcode == 0 and (directory / f"counter_{child.pid}.db").exists()
    assert scrape(directory)[("forked_total",)] == 6
    assert counter._value.get() == 1  # the parent's value, untouched by its child's


def test_values_stay_right_when_their_file_grows(directory):
    first = Counter("early", "e", registry=None)
    internals.counting(first)(1)
    many = Counter("many", "m", ["n"], registry=None)
    for n in range(2000):  # ~300 KB of keys: the 64 KiB file is mapped anew several times
        internals.counting(many.labels(str(n)))(n)
    internals.counting(first)(1)  # written through the mapping it was given before the file grew
    scraped = scrape(directory)
    assert scraped[("early_total",)] == 2 and scraped[("many_total", ("n", "1999"))] == 1999
    assert (directory / f"counter_{os.getpid()}.db").stat().st_size > 1 << 16
