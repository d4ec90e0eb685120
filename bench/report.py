"""One table (and charts) of the latest benchmark results, and a regression check against git.

    python bench/report.py            # the table from bench/results/*.json, newest file per benchmark
    python bench/report.py --charts   # also bench/results/ratios.png and latency.png (needs matplotlib)
    python bench/report.py --check    # compare with the committed results: exit 1 on a drop over 20%

Every figure is next to its ceiling from the same run, so the ratio is what to compare across
runs and machines; `--check` compares ratios (and absolute figures only for information),
because absolute figures move with whatever else the shared machine is doing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
# A ratio that falls by more than this against the committed results is flagged.
DROP_TOLERANCE = 0.20
# Issue 6's targets (ratio to the ceiling in the same run), drawn on the chart.
# (The consumer's target is absolute, 200,000 rows/s, so it is not drawn as a ratio.)
TARGETS = {"pixel/track one event / hello": 0.6, "GET workspace (limiter on) / hello": 0.6}


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    ceiling: float | None
    ratio: float | None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


def newest(benchmark: str, directory: Path = RESULTS) -> Path | None:
    files = sorted(directory.glob(f"*-{benchmark}.json"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def figures_of(benchmark: str, doc: dict) -> list[Figure]:
    """The comparable figures of one results document, whatever its benchmark's layout."""
    if benchmark == "workspace_get":
        ep = {k: v["summary"] for k, v in doc["endpoints"].items()}
        hello = ep["hello"]["median_rps"]
        return [Figure(f"GET workspace (limiter {label}) / hello", ep[key]["median_rps"], "req/s", hello,
                       ep[key]["median_rps"] / hello, ep[key]["p50_ms"], ep[key].get("p90_ms"), ep[key]["p99_ms"])
                for key, label in (("workspace", "on"), ("workspace-nolimit", "off"))]
    if benchmark == "redis_scripts":
        ops = {k: v["summary"]["median_calls_per_s"] for k, v in doc["operations"].items()}
        return [Figure(f"{name}.lua / Redis GET", ops[name], "calls/s", ops["get"], ops[name] / ops["get"])
                for name in ("rate_limit", "key_gate")]
    if benchmark == "pixel_e2e":
        t = {k: v["summary"] | {"n": v["events_per_request"]} for k, v in doc["targets"].items()}
        hello = t["hello"]["median_rps"]
        single, batch = t["pixel"], next(v for k, v in t.items() if k.startswith("pixel-batch"))
        return [
            Figure("pixel/track one event / hello", single["median_rps"], "req/s", hello,
                   single["median_rps"] / hello, single["p50_ms"], single["p90_ms"], single["p99_ms"]),
            Figure(f"pixel/track batch of {batch['n']} (events/s)", batch["median_rps"] * batch["n"], "events/s",
                   None, None, batch["p50_ms"], batch["p90_ms"], batch["p99_ms"]),
            Figure("last request → last row", doc["counts"]["drain_seconds"], "s", None, None),
        ]
    if benchmark == "webhooks":
        sent, raw = doc["dispatcher"]["deliveries_per_s"], doc["raw_posts"]["posts_per_s"]
        return [Figure("webhook deliveries / raw httpx POST", sent, "deliv/s", raw, sent / raw)]
    if benchmark == "consumer":
        consumer, plain = doc["consumer"]["rows_per_s"], doc["plain_insert"]["rows_per_s_insert_only"]
        return [Figure("consumer / plain insert", consumer, "rows/s", plain, consumer / plain)]
    return []


BENCHMARKS = ("workspace_get", "redis_scripts", "pixel_e2e", "consumer", "webhooks")


def load_all(directory: Path = RESULTS) -> dict[str, list[Figure]]:
    found = {}
    for benchmark in BENCHMARKS:
        path = newest(benchmark, directory)
        if path is not None:
            found[benchmark] = figures_of(benchmark, json.loads(path.read_text()))
    return found


def committed(benchmark: str) -> list[Figure]:
    """The figures of the newest results file of this benchmark as committed in git HEAD."""
    listing = subprocess.run(["git", "ls-files", f"bench/results/*-{benchmark}.json"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    if not listing:
        return []
    text = subprocess.run(["git", "show", f"HEAD:{sorted(listing)[-1]}"], cwd=ROOT, capture_output=True,
                          text=True).stdout
    return figures_of(benchmark, json.loads(text)) if text else []


def print_table(found: dict[str, list[Figure]]) -> None:
    header = f"{'figure':<44} {'value':>12} {'unit':<8} {'ceiling':>10} {'ratio':>6} {'p50':>7} {'p90':>7} {'p99':>7}"
    print(header + "\n" + "-" * len(header))
    for figures in found.values():
        for f in figures:
            ceiling = f"{f.ceiling:,.0f}" if f.ceiling else ""
            ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
            lat = [f"{x:.1f}" if x is not None else "" for x in (f.p50, f.p90, f.p99)]
            print(f"{f.name:<44} {f.value:>12,.1f} {f.unit:<8} {ceiling:>10} {ratio:>6} "
                  f"{lat[0]:>7} {lat[1]:>7} {lat[2]:>7}")
    print("(latency in ms; ratios are to the ceiling measured in the same run)")


def check(found: dict[str, list[Figure]]) -> int:
    """1 when a ratio fell more than DROP_TOLERANCE below the committed results."""
    dropped = 0
    for benchmark, figures in found.items():
        before = {f.name: f for f in committed(benchmark)}
        for f in figures:
            old = before.get(f.name)
            if old is None or f.ratio is None or old.ratio is None:
                continue
            change = f.ratio / old.ratio - 1
            flag = "DROP" if change < -DROP_TOLERANCE else "ok"
            dropped += flag == "DROP"
            print(f"{flag:<5} {f.name:<44} ratio {old.ratio:.2f} → {f.ratio:.2f} ({change:+.0%}); "
                  f"{f.unit} {old.value:,.0f} → {f.value:,.0f}")
    print(f"\n{dropped} figure(s) dropped more than {DROP_TOLERANCE:.0%}" if dropped else
          f"\nno ratio dropped more than {DROP_TOLERANCE:.0%} against the committed results")
    return 1 if dropped else 0


def draw(found: dict[str, list[Figure]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [f for figures in found.values() for f in figures if f.ratio is not None]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(ratios) + 1.5))
    ax.barh([f.name for f in ratios], [f.ratio for f in ratios], color="#4477aa")
    for i, f in enumerate(ratios):
        ax.text(f.ratio, i, f" {f.ratio:.2f}", va="center")
        if f.name in TARGETS:
            ax.plot([TARGETS[f.name]] * 2, [i - 0.4, i + 0.4], color="#cc3311", linewidth=2)
    ax.set_xlabel("ratio to the ceiling measured in the same run (red: target)")
    ax.invert_yaxis()
    fig.tight_layout()
    paths = [RESULTS / "ratios.png"]
    fig.savefig(paths[0], dpi=110)

    lat = [f for figures in found.values() for f in figures if f.p99 is not None]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(lat) + 1.5))
    for offset, (attr, colour) in enumerate((("p50", "#88ccee"), ("p90", "#4477aa"), ("p99", "#332288"))):
        ax.barh([i + (offset - 1) * 0.27 for i in range(len(lat))], [getattr(f, attr) or 0 for f in lat],
                height=0.27, color=colour, label=attr)
    ax.set_yticks(range(len(lat)), [f.name for f in lat])
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log scale), at saturation with 64 connections")
    ax.legend()
    ax.invert_yaxis()
    fig.tight_layout()
    paths.append(RESULTS / "latency.png")
    fig.savefig(paths[1], dpi=110)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--charts", action="store_true", help="draw bench/results/ratios.png and latency.png")
    ap.add_argument("--check", action="store_true", help="compare with the committed results (exit 1 on a drop)")
    args = ap.parse_args()
    found = load_all()
    if not found:
        print("no results in bench/results/: run `make bench` (or `make bench QUICK=1`) first", file=sys.stderr)
        return 2
    print_table(found)
    if args.charts:
        try:
            for path in draw(found):
                print(f"chart: {path}")
        except ImportError:
            print("charts need matplotlib: .venv/bin/pip install '.[bench]'", file=sys.stderr)
            return 2
    if args.check:
        print()
        return check(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
