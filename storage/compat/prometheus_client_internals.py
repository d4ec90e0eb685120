"""prometheus_client's internals, as the API's metrics (storage/telemetry/metrics.py) use them.

Talks to no service: writes prometheus_client's multiprocess files, and reaches into a counter's or
a histogram's series for their values. Each API worker writes every value it observes to
`<kind>_<pid>.db` files of one directory, which MultiProcessCollector sums at a scrape.
prometheus_client's own value class takes a lock and asks for the pid on every write so that
threads and forks are safe anywhere, and its observe() checks and loops around the writes; on a
pixel request's ~7 writes that was 6 µs of the metrics' 9, where the budget is 3 % of a ~126 µs
request. Here every write comes from the worker's event loop, a fork is handled once when it
happens, and each value packs itself into its slot of the file: ~3 µs for the same observations.
Contract test: tests/unit/storage/compat/test_prometheus_client_internals.py (no service needed).
"""

import os
import struct
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

VERIFIED = {"prometheus-client": "0.26.0"}
# A value's slot in its file: the value and a timestamp, as MmapedDict packs them.
SLOT = struct.Struct("dd")


class Store:
    """One process's files in `directory`, one per kind of value, and the values written to them."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.pid = os.getpid()
        self.files: dict[str, MmapedDict] = {}
        self.values: list = []
        self.value_type: type | None = None

    def file(self, prefix: str) -> MmapedDict:
        file = self.files.get(prefix)
        if file is None:
            file = self.files[prefix] = MmapedDict(str(self.directory / f"{prefix}_{self.pid}.db"))
        return file

    def reopen(self) -> None:
        """In a forked child: the parent's files are not its own; each value starts again in new ones."""
        self.pid = os.getpid()
        for file in self.files.values():
            file.close()
        self.files.clear()
        for value in self.values:
            value.open()

    def value_class(self) -> type:
        """The class of this store's values (made once: MmapTiming recognises its values by it)."""
        store = self

        class MmapValue:
            """Where a metric keeps one value (prometheus_client's ValueClass interface)."""

            _multiprocess = True
            __slots__ = ("prefix", "key", "file", "value", "timestamp", "mapping", "offset")

            def __init__(self, typ, metric_name, name, labelnames, labelvalues, help_text, multiprocess_mode="", **_):
                self.prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
                self.key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
                self.open()
                store.values.append(self)

            def open(self) -> None:
                self.file = store.file(self.prefix)
                self.value, self.timestamp = self.file.read_value(self.key)  # gives the key its slot
                # A file that grows is mapped anew and its old mapping stays open, so a slot's
                # mapping and offset stay right for the file's life (the contract test grows one).
                self.mapping, self.offset = self.file._m, self.file._positions[self.key]

            def inc(self, amount: float) -> None:
                self.value += amount
                SLOT.pack_into(self.mapping, self.offset, self.value, 0.0)

            def set(self, value: float, timestamp: float | None = None) -> None:
                self.value, self.timestamp = value, timestamp or 0.0
                SLOT.pack_into(self.mapping, self.offset, value, self.timestamp)

            def get(self) -> float:
                return self.value

            def set_exemplar(self, exemplar) -> None:
                pass  # not kept in multiprocess mode, as with prometheus_client's own

            def get_exemplar(self) -> None:
                return None

        self.value_type = MmapValue
        return MmapValue


_store: Store | None = None
_fork_hook_installed = False


def install_mmap_values(directory: Path) -> None:
    """Metrics created from now on in this process keep their values in files of `directory`.

    Relies on `prometheus_client.values.ValueClass` (0.26.0: the class every metric instantiates
    for each value when it is created, chosen once at import from PROMETHEUS_MULTIPROC_DIR) and on
    `prometheus_client.mmap_dict` (MmapedDict, mmap_key: the files and keys MultiProcessCollector
    reads, named `<type>[_<gauge mode>]_<pid>.db`; a key's slot of two doubles at
    `_positions[key]` in the mapping `_m`, which growing the file replaces without closing the
    old one). Writes must come from one thread, the event loop's. If ValueClass goes, metrics keep
    their values in memory and a scrape reads none of them; if the file format changes, a scrape
    reads wrong values or none: the contract test shows either.
    """
    global _store, _fork_hook_installed
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_after_fork)
        _fork_hook_installed = True
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _store = Store(directory)
    values.ValueClass = _store.value_class()


def _after_fork() -> None:
    if _store is not None:
        _store.reopen()


def counting(series) -> Callable[[float], None]:
    """A counter series' increment (`Counter.labels(…)`, or a counter without labels), its checks
    (observable, amount ≥ 0, exemplar) skipped: callers add counts only.

    Relies on `series._value` (0.26.0: the series' value, whose inc() Counter.inc calls). If it
    goes, creating the series' counting raises AttributeError at the API's start.
    """
    inc: Callable[[float], None] = series._value.inc
    return inc


class Timing:
    """A histogram series' observe(): its bucket found by bisection, then the sum's and the bucket's writes.

    Relies on `series._upper_bounds` (ascending, +Inf last), `series._buckets` (one value per bound,
    each counting the observations of its own bucket: a scrape accumulates them) and `series._sum`
    (0.26.0, as Histogram.observe uses them). If they go, creating a Timing raises AttributeError at
    the API's start; if their meaning changes, the contract test's buckets stop matching observe()'s.
    """

    __slots__ = ("bounds", "buckets", "total")

    def __init__(self, series):
        self.bounds = list(series._upper_bounds)
        self.buckets = series._buckets
        self.total = series._sum

    def observe(self, seconds: float) -> None:
        self.total.inc(seconds)
        self.buckets[bisect_left(self.bounds, seconds)].inc(1)


class MmapTiming(Timing):
    """Timing of a series whose values are install_mmap_values()'s: both writes made here, one call."""

    __slots__ = ()

    def observe(self, seconds: float) -> None:
        total = self.total
        total.value += seconds
        SLOT.pack_into(total.mapping, total.offset, total.value, 0.0)
        bucket = self.buckets[bisect_left(self.bounds, seconds)]
        bucket.value += 1
        SLOT.pack_into(bucket.mapping, bucket.offset, bucket.value, 0.0)


def timing(series) -> Timing:
    """A histogram series' observe(), as Timing says; written in one call when its values are in files."""
    mapped = _store is not None and _store.value_type is not None and isinstance(series._sum, _store.value_type)
    return MmapTiming(series) if mapped else Timing(series)
