"""Calls/s of Sluice's Redis Lua scripts next to a plain Redis GET, from the app's own client.

What it measures: completed calls per second, and per-call latency, of

* ``get``: ``GET`` of one small key, the floor of a round trip;
* ``rate_limit``: ``RateLimiter.allow(key, 100000, 200000)`` (EVALSHA of
  gcra.lua + rate_limit.lua), spread over 1,000 limiter keys;
* ``key_gate``: ``KeyGate.check(key_hash)`` (EVALSHA of gcra.lua +
  key_gate.lua, limiting on), the per-request hot path of every authenticated
  request, over 1,000 key hashes whose records (enterprise tier, limit 100000,
  capacity 200000) are stored with ``KeyGate.remember`` before each round;

issued by N concurrent asyncio tasks (default 32; fewer than the pool's 64
connections, so none waits for one) on one redis-py asyncio client made by
``storage.redis.client.create_client(REDIS_URL)``, the app's client config
(hiredis parser), on uvloop like the app under granian. Rounds are
interleaved A B C A B C (get, rate_limit, key_gate, ...). The client is
Python, pinned to core 1: the figures are client + round trip + Redis, and on
loopback the client's CPU is usually the limit, so ``client us/call`` (process
CPU per call) and ``redis us/call`` (Redis' used_cpu_user+sys per call, from
INFO; includes whatever else uses that Redis meanwhile) say where time goes.
Redis is not pinned by this benchmark (it is already running; its CPU
affinity is printed). Any refused admission or missing record refuses the
figures.

Setup: needs REDIS_URL (run under ``python -m storage.local_stack run -- ...``
or ``make bench``). Keys live under a per-run hash tag and are deleted at the
end, also on Ctrl-C. Results go to
``bench/results/<YYYY-MM-DD>-<hostname>-redis_scripts.json``.

Usage::

    python -m storage.local_stack run -- python bench/redis_scripts.py            # 3 rounds x 10 s
    python -m storage.local_stack run -- python bench/redis_scripts.py --quick    # 3 rounds x 3 s
    python -m storage.local_stack run -- python bench/redis_scripts.py --tasks 64 --rounds 5
    make bench   # or: make bench QUICK=1
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import harness
from harness import CLIENT_CORE, ROOT

sys.path.insert(0, str(ROOT))

from redis.exceptions import RedisError  # noqa: E402

from storage.redis.client import MAX_CONNECTIONS, close_client, create_client  # noqa: E402
from storage.redis.key_gate import KeyGate, KeyRecord  # noqa: E402
from storage.redis.key_gate import _keys as gate_keys  # noqa: E402 - the record and bucket names, for cleanup
from storage.redis.rate_limit import RateLimiter, limiter_key  # noqa: E402

try:
    import uvloop
except ImportError:  # the app requires it; the benchmark can do without
    uvloop = None

BENCHMARK = "redis_scripts"
TASKS = 32
LIMIT, CAPACITY, TIER = 100_000, 200_000, "enterprise"
LIMITER_KEYS = 1_000
GATE_KEYS = 1_000
WARMUP_SECONDS = 1
PACKAGES = ["redis", "hiredis", "uvloop"]


class Refused(Exception):
    """A script refused a call or found no record: the figures must not be counted."""


@dataclass
class Sample:
    """One round of one operation."""

    calls_per_s: float
    calls: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    client_us_per_call: float
    redis_us_per_call: float
    bad: int = 0


@dataclass
class Op:
    """An operation: `call(n)` makes the n-th call and says whether its answer was right."""

    label: str
    describe: str
    samples: list[Sample] = field(default_factory=list)

    async def prepare(self) -> None:
        """Untimed set-up before each round."""

    async def call(self, n: int) -> bool:
        raise NotImplementedError

    def keys(self) -> list[str]:
        """Redis keys to delete at the end."""
        return []


class GetOp(Op):
    def __init__(self, client, tag: str):
        super().__init__("get", "GET of one key")
        self.client = client
        self.key = f"sluice:bench:{{{tag}}}:get"
        self.value = b"x" * 16

    async def prepare(self) -> None:
        await self.client.set(self.key, self.value)

    async def call(self, n: int) -> bool:
        return await self.client.get(self.key) == self.value

    def keys(self) -> list[str]:
        return [self.key]


class RateLimitOp(Op):
    def __init__(self, client, tag: str):
        super().__init__("rate_limit", f"RateLimiter.allow({LIMIT}, {CAPACITY}) over {LIMITER_KEYS:,} keys")
        self.limiter = RateLimiter(client)
        self.bucket_keys = [limiter_key("bench", f"{tag}:{i}") for i in range(LIMITER_KEYS)]

    async def call(self, n: int) -> bool:
        decision = await self.limiter.allow(self.bucket_keys[n % LIMITER_KEYS], LIMIT, CAPACITY)
        return decision.allowed

    def keys(self) -> list[str]:
        return self.bucket_keys


class KeyGateOp(Op):
    def __init__(self, client):
        super().__init__("key_gate", f"KeyGate.check over {GATE_KEYS:,} cached {TIER} key records")
        self.gate = KeyGate(client, limit=True)
        self.hashes = [secrets.token_bytes(32) for _ in range(GATE_KEYS)]  # as hash_key() makes them
        self.record = KeyRecord(
            id=1,
            workspace_id=1,
            account_id=1,
            scopes=("*",),
            tier=TIER,
            expires_at=None,
            revoked_at=None,
            limit=LIMIT,
            capacity=CAPACITY,
        )

    async def prepare(self) -> None:
        # Records expire after RECORD_TTL_SECONDS: store them again before every round.
        await asyncio.gather(*(self.gate.remember(h, self.record) for h in self.hashes))

    async def call(self, n: int) -> bool:
        hit = await self.gate.check(self.hashes[n % GATE_KEYS])
        return hit is not None and hit[1].allowed

    def keys(self) -> list[str]:
        return [k for h in self.hashes for k in gate_keys(h)]


# --- measuring --------------------------------------------------------------


async def redis_cpu_seconds(client) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _worker(op: Op, counter: itertools.count, deadline: float, latencies: list[float]) -> int:
    bad = 0
    clock = time.perf_counter
    while clock() < deadline:
        n = next(counter)
        t0 = clock()
        ok = await op.call(n)
        latencies.append(clock() - t0)
        if not ok:
            bad += 1
    return bad


async def measure(client, op: Op, tasks: int, duration: float) -> Sample:
    """One round: `tasks` tasks call op until `duration` s have passed; calls finished / elapsed."""
    await op.prepare()
    latencies: list[float] = []
    counter = itertools.count()
    redis0 = await redis_cpu_seconds(client)
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + duration
    bads = await asyncio.gather(*(_worker(op, counter, deadline, latencies) for _ in range(tasks)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    redis_cpu = await redis_cpu_seconds(client) - redis0
    calls = len(latencies)
    latencies.sort()
    return Sample(
        calls_per_s=calls / elapsed,
        calls=calls,
        elapsed_s=elapsed,
        p50_ms=latencies[calls // 2] * 1e3,
        p99_ms=latencies[min(calls - 1, calls * 99 // 100)] * 1e3,
        client_us_per_call=cpu / calls * 1e6,
        redis_us_per_call=redis_cpu / calls * 1e6,
        bad=sum(bads),
    )


def check(op: Op, sample: Sample) -> None:
    if sample.bad:
        raise Refused(f"{op.label}: {sample.bad} of {sample.calls} calls refused or found no record")


async def run_rounds(client, ops: list[Op], args: argparse.Namespace) -> None:
    for op in ops:
        check(op, await measure(client, op, args.tasks, WARMUP_SECONDS))
    print(f"warmed up {WARMUP_SECONDS}s per operation (scripts loaded)", flush=True)
    print()
    for r in range(1, args.rounds + 1):
        for op in ops:
            sample = await measure(client, op, args.tasks, args.duration)
            check(op, sample)
            op.samples.append(sample)
            print(
                f"round {r}/{args.rounds}: {op.label:<10} {sample.calls_per_s:>9,.0f} calls/s  "
                f"p50 {sample.p50_ms:5.2f} ms  p99 {sample.p99_ms:5.2f} ms  "
                f"client {sample.client_us_per_call:5.1f} us/call  redis {sample.redis_us_per_call:5.1f} us/call",
                flush=True,
            )


async def delete_keys(client, ops: list[Op]) -> int:
    keys = [k for op in ops for k in op.keys()]
    # One DEL per key: the keys sit in different Cluster slots.
    async with client.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.delete(k)
        await pipe.execute()
    return len(keys)


# --- reporting --------------------------------------------------------------


def summarize(samples: list[Sample]) -> dict[str, float]:
    rates = [s.calls_per_s for s in samples]
    med = statistics.median
    return {
        "median_calls_per_s": med(rates),
        "min_calls_per_s": min(rates),
        "max_calls_per_s": max(rates),
        "p50_ms": med(s.p50_ms for s in samples),
        "p99_ms": med(s.p99_ms for s in samples),
        "client_us_per_call": med(s.client_us_per_call for s in samples),
        "redis_us_per_call": med(s.redis_us_per_call for s in samples),
    }


def print_table(ops: list[Op]) -> dict[str, float]:
    """Print the summary table; return each operation's median calls/s over GET's."""
    hdr = (
        f"{'operation':<11} {'median calls/s':>14} {'min':>9} {'max':>9} {'ratio to GET':>12} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'client us':>9} {'redis us':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    sums = {op.label: summarize(op.samples) for op in ops}
    base = sums["get"]["median_calls_per_s"]
    ratios = {}
    for op in ops:
        sm = sums[op.label]
        ratios[op.label] = sm["median_calls_per_s"] / base
        print(
            f"{op.label:<11} {sm['median_calls_per_s']:>14,.0f} {sm['min_calls_per_s']:>9,.0f} "
            f"{sm['max_calls_per_s']:>9,.0f} {ratios[op.label]:>12.2f} {sm['p50_ms']:>7.2f} {sm['p99_ms']:>7.2f} "
            f"{sm['client_us_per_call']:>9.1f} {sm['redis_us_per_call']:>8.1f}"
        )
    print("(medians over rounds; ratio = median calls/s / GET's; client/redis us = CPU per call,")
    print(" client = this process on core 1, redis = INFO used_cpu_user+sys, whole server)")
    print("Python client: the figures are client + loopback round trip + Redis, not Redis alone.")
    return ratios


def redis_affinity(info: dict) -> str:
    """Redis' pid and allowed cores, if its process is visible from here."""
    pid = int(info.get("process_id", 0))
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cores = sorted(os.sched_getaffinity(pid))
    except (OSError, ValueError):
        return f"pid {pid} not visible here; not pinned by this benchmark"
    if "redis" not in comm:
        return f"pid {pid} is not visible here (another namespace?); not pinned by this benchmark"
    return f"pid {pid}, allowed cores {','.join(map(str, cores))} (not pinned: already running)"


def print_header(machine: dict, args: argparse.Namespace, server: dict, affinity: str, loop: str) -> None:
    print(__doc__.strip().split("\n\n")[0])
    print()
    harness.print_machine(machine)
    print(f"Redis:      {server.get('redis_version')} at {redacted(os.environ['REDIS_URL'])}; {affinity}")
    print(
        f"Client:     this process pinned to core {CLIENT_CORE}; {loop}; create_client() "
        f"(BlockingConnectionPool, max {MAX_CONNECTIONS} connections); {args.tasks} concurrent tasks"
    )
    print(
        f"Plan:       {args.rounds} rounds x {args.duration}s per operation, interleaved "
        f"get/rate_limit/key_gate; {WARMUP_SECONDS}s warm-up each"
    )
    print()


def redacted(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"redis://***@{tail}" if sep else url


def write_results(
    machine: dict,
    args: argparse.Namespace,
    server: dict,
    affinity: str,
    loop: str,
    ops: list[Op],
    ratios: dict[str, float],
) -> Path:
    return harness.save_results(
        args.out,
        BENCHMARK,
        {
            "machine": machine,
            "config": {
                "rounds": args.rounds,
                "duration_s": args.duration,
                "warmup_s": WARMUP_SECONDS,
                "tasks": args.tasks,
                "order": "interleaved A B C: " + ", ".join(op.label for op in ops),
                "client": f"storage.redis.client.create_client (max {MAX_CONNECTIONS} connections), {loop}",
                "client_core": CLIENT_CORE,
                "redis": {"version": server.get("redis_version"), "affinity": affinity},
                "tier": {"name": TIER, "limit": LIMIT, "capacity": CAPACITY},
                "limiter_keys": LIMITER_KEYS,
                "gate_keys": GATE_KEYS,
            },
            "operations": {
                op.label: {
                    "what": op.describe,
                    "summary": summarize(op.samples),
                    "samples": [asdict(s) for s in op.samples],
                }
                for op in ops
            },
            "ratios_to_get": ratios,
            "per_round_ratios_to_get": {
                op.label: [s.calls_per_s / g.calls_per_s for s, g in zip(op.samples, ops[0].samples, strict=True)]
                for op in ops
            },
        },
    )


# --- main -------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.round_args(ap, "operation per round")
    ap.add_argument("--tasks", type=int, default=TASKS, help=f"concurrent tasks (default {TASKS})")
    harness.out_arg(ap, BENCHMARK)
    args = harness.check_round_args(ap, ap.parse_args())
    if not 1 <= args.tasks <= MAX_CONNECTIONS:
        ap.error(f"--tasks must be between 1 and {MAX_CONNECTIONS} (the pool's size)")
    return args


async def amain(args: argparse.Namespace, loop_name: str) -> int:
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    client = create_client(os.environ["REDIS_URL"])
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    ops: list[Op] = [GetOp(client, tag), RateLimitOp(client, tag), KeyGateOp(client)]
    try:
        server = await client.info("server")
        affinity = redis_affinity(server)
        machine = harness.machine_info(PACKAGES)
        print_header(machine, args, server, affinity, loop_name)
        try:
            await run_rounds(client, ops, args)
        except Refused as exc:
            print(f"\nREFUSED: {exc}, figures not counted")
            return 1
        except (RedisError, OSError) as exc:
            print(f"\nFAILED: a Redis call failed ({exc!r}); was Redis restarted? Figures not counted")
            return 1
        print()
        ratios = print_table(ops)
        print()
        write_results(machine, args, server, affinity, loop_name, ops, ratios)
        return 0
    except asyncio.CancelledError:
        print("\ninterrupted; deleting the benchmark's keys", file=sys.stderr)
        return 130
    finally:
        try:
            n = await asyncio.shield(delete_keys(client, ops))
            print(f"cleanup: deleted {n:,} benchmark keys", flush=True)
        except Exception as exc:  # noqa: BLE001 - report; the keys expire or are harmless
            print(f"warning: could not delete the benchmark's keys (tag {tag}): {exc!r}", file=sys.stderr)
        await close_client(client)


def main() -> int:
    args = parse_args()
    if not os.environ.get("REDIS_URL"):
        print(
            "error: REDIS_URL not set: run under `python -m storage.local_stack run -- ...` or `make bench`.",
            file=sys.stderr,
        )
        return 2
    if (os.cpu_count() or 1) < 2:
        print("error: need at least 2 CPU cores (the client is pinned to core 1)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    factory = uvloop.new_event_loop if uvloop else None
    loop_name = "uvloop" if uvloop else "asyncio default loop"
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(amain(args, loop_name))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
