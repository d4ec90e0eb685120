"""The table and charts of a suite run, and the regression check against the committed results.

    python bench/report.py                  # the table of the newest bench/results/<date>-<host>.json
    python bench/report.py --charts         # also bench/results/ratios.png and latency.png (matplotlib)
    python bench/report.py --markdown       # the table as Markdown, for the README
    python bench/report.py --check          # compare with the newest committed results: exit 1 on a
                                            # drop over 20%
    python bench/report.py --file F.json    # any results file instead of the newest

Every figure is measured next to its ceiling in the same run, so ``--check`` compares ratios
where there is one (absolute figures move with whatever else the shared machine is doing),
and the value where the target is absolute (end to end, consumer, latency: there a rise is
the drop). For humans, not CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from figures import TARGETS, from_dict

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent
KIND = "sluice-bench-suite"
DROP_TOLERANCE = 0.20  # a figure more than this much worse than the committed one is flagged
LOADS = ("50%", "80%")


def suite_runs(directory: Path = RESULTS) -> list[tuple[Path, dict]]:
    """Every suite results file in the directory, oldest first (per-benchmark files are skipped)."""
    runs = []
    for path in directory.glob("*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            runs.append((path, doc))
    return sorted(runs, key=lambda r: r[1]["finished_at"])


def committed_run() -> tuple[str, dict] | None:
    """The newest suite results file as committed in git HEAD."""
    listing = subprocess.run(
        ["git", "ls-files", "bench/results/*.json"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    runs = []
    for name in listing:
        text = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True).stdout
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            runs.append((name, doc))
    return max(runs, key=lambda r: r[1]["finished_at"]) if runs else None


# --- the table ----------------------------------------------------------------


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{text} {unit}".strip()


def rows_of(doc: dict) -> list[list[str]]:
    """[figure, value, ceiling, ratio, p99 at 50%/80%, target, met, note] per figure."""
    out = []
    for f in map(from_dict, doc["figures"]):
        p99 = " / ".join(number(f.latency[k]["p99_ms"]) if k in f.latency else "–" for k in LOADS) if f.latency else ""
        met = {True: "yes", False: "NO", None: ""}[f.met]
        if f.met is None and f.target and f.status == "ok":
            met = "not shown" if f.window_s else ""
        if f.status != "ok":
            met = f.status.upper()
        ceiling = f"{number(f.ceiling, f.ceiling_unit or f.unit)} ({f.ceiling_name})" if f.ceiling is not None else ""
        out.append(
            [
                f.name,
                number(f.value, f.unit),
                ceiling,
                number(f.ratio) if f.ratio is not None else "",
                f"{p99} ms" if p99 else "",
                f.target,
                met,
                f.note,
            ]
        )
    return out


HEADER = ["figure", "value", "ceiling (same run)", "ratio", "p99 @50%/80% load", "target", "met", "note"]


def title(doc: dict) -> str:
    m = doc["machine"]
    mode = "QUICK (short runs)" if doc.get("quick") else "full"
    return (
        f"Sluice benchmarks, {doc['finished_at']} on {m['hostname']}, {mode}, {doc['seconds']} s: "
        f"{m['cpu_model']}, {m['logical_cores']} cores; {m['pinning']}"
    )


def print_table(doc: dict) -> None:
    rows = rows_of(doc)
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER) - 1)]

    def line(r: list[str]) -> str:
        # Every column but the last is padded to its width; the last runs on unpadded.
        padded = (
            c.ljust(w) if i in (0, 2, 5, 6) else c.rjust(w) for i, (c, w) in enumerate(zip(r[:-1], widths, strict=True))
        )
        return "  ".join(padded) + "  " + r[-1]

    print(title(doc))
    print(line(HEADER) + "\n" + "-" * (sum(widths) + 2 * len(widths) + 4))
    for r in rows:
        print(line(r))
    print(
        "(ratio: figure ÷ ceiling, both from this run; p99: open loop (vegeta) at 50%/80% of the endpoint's "
        "max, corrected for coordinated omission)"
    )


def markdown(doc: dict) -> str:
    m = doc["machine"]
    head = (
        f"Run {doc['finished_at'][:10]} ({'`make bench QUICK=1`' if doc.get('quick') else '`make bench`'}, "
        f"{doc['seconds']} s) on {m['cpu_model']}, {m['logical_cores']} cores; {m['pinning']}.\n\n"
    )
    rows = [HEADER, ["---"] * len(HEADER), *rows_of(doc)]
    return head + "\n".join("| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows)


# --- the check ----------------------------------------------------------------


def check(doc: dict, base: dict, base_name: str) -> int:
    """1 when a figure is more than DROP_TOLERANCE worse than in the committed results."""
    before = {f.key: f for f in map(from_dict, base["figures"])}
    print(f"against {base_name} ({base['finished_at']}{', QUICK' if base.get('quick') else ''}):")
    dropped = 0
    for f in map(from_dict, doc["figures"]):
        old = before.get(f.key)
        if old is None or f.status != "ok" or old.status != "ok":
            if old is not None and f.status != "ok":
                dropped += 1
                print(f"DROP  {f.name:<44} {f.status} now (was {old.status})")
            continue
        # An absolute target (events/s, rows/s, ms) is judged on the value, so that is what must
        # not regress; otherwise the ratio, which the shared machine's load moves less.
        absolute = f.key in TARGETS and TARGETS[f.key].on in ("value", "max")
        use_ratio = not absolute and f.ratio is not None and old.ratio is not None
        new_v, old_v = (f.ratio, old.ratio) if use_ratio else (f.value, old.value)
        if not old_v or new_v is None:
            continue
        change = new_v / old_v - 1
        worse = change > DROP_TOLERANCE if f.better == "lower" else change < -DROP_TOLERANCE
        dropped += worse
        what = "ratio" if use_ratio else f.unit
        print(f"{'DROP' if worse else 'ok':<5} {f.name:<44} {what} {number(old_v)} → {number(new_v)} ({change:+.0%})")
    if doc.get("quick") != base.get("quick"):
        print("note: one run is QUICK and the other full; short runs are noisier")
    print(
        f"\n{dropped} figure(s) more than {DROP_TOLERANCE:.0%} worse"
        if dropped
        else f"\nno figure more than {DROP_TOLERANCE:.0%} worse than the committed results"
    )
    return 1 if dropped else 0


# --- the charts ---------------------------------------------------------------


def chart_title(doc: dict) -> str:
    m = doc["machine"]
    return (
        f"{doc['finished_at'][:10]}, {'QUICK' if doc.get('quick') else 'full'} run on {m['cpu_model']}, "
        f"{m['logical_cores']} cores; server on core 0, load generator on core 1"
    )


def draw_charts(doc: dict) -> list[Path]:
    """ratios.png (ratio to the ceiling; share of each target) and latency.png; [] without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("charts need matplotlib: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [f for f in map(from_dict, doc["figures"]) if f.status == "ok"]
    ratios = [f for f in figs if f.ratio is not None and not f.key.endswith("_count")]
    targeted = [
        f for f in figs if f.key in TARGETS and TARGETS[f.key].on in ("value", "max", "ratio") and f.value is not None
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 0.45 * max(len(ratios), len(targeted)) + 2.2))
    left.barh([f.name for f in ratios], [f.ratio for f in ratios], color="#4477aa")
    for i, f in enumerate(ratios):
        left.text(f.ratio, i, f" {f.ratio:.2f}", va="center", fontsize=8)
        t = TARGETS.get(f.key)
        if t is not None and t.on == "ratio":
            left.plot([t.threshold] * 2, [i - 0.4, i + 0.4], color="#cc3311", linewidth=2)
    left.set_title("figure ÷ its ceiling, same run (red: target)", fontsize=10)
    left.invert_yaxis()
    share = [(f.ratio if TARGETS[f.key].on == "ratio" else f.value) for f in targeted]
    share = [
        (TARGETS[f.key].threshold / s if TARGETS[f.key].on == "max" else s / TARGETS[f.key].threshold) if s else 0
        for f, s in zip(targeted, share, strict=True)
    ]
    colours = ["#228833" if f.met else "#cc3311" if f.met is False else "#bbbbbb" for f in targeted]
    right.barh([f"{f.name} ({TARGETS[f.key].text})" for f in targeted], share, color=colours)
    right.axvline(1.0, color="black", linewidth=1)
    for i, s in enumerate(share):
        right.text(s, i, f" {s:.2f}", va="center", fontsize=8)
    right.set_title("share of the target (1 = met; red missed, grey too short to show)", fontsize=10)
    right.invert_yaxis()
    fig.suptitle(chart_title(doc), fontsize=9)
    fig.tight_layout()
    paths = [RESULTS / "ratios.png", RESULTS / "latency.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    lat = [f for f in figs if f.latency]
    fig, ax = plt.subplots(figsize=(11, 0.9 * len(lat) + 2))
    series = [
        (load, p, colour)
        for load, shades in zip(
            LOADS,
            (("#bbccee", "#6699cc", "#336699", "#223355"), ("#ffcc99", "#ee9955", "#cc6633", "#883311")),
            strict=True,
        )
        for p, colour in zip(("p50_ms", "p90_ms", "p99_ms", "max_ms"), shades, strict=True)
    ]
    height = 0.8 / len(series)
    for j, (load, p, colour) in enumerate(series):
        ax.barh(
            [i - 0.4 + (j + 0.5) * height for i in range(len(lat))],
            [f.latency.get(load, {}).get(p, 0) for f in lat],
            height=height,
            color=colour,
            label=f"{p[:-3]} @{load}",
        )
    ax.set_yticks(range(len(lat)), [f.name for f in lat])
    ax.axvline(
        TARGETS["pixel_p99_80"].threshold,
        color="#cc3311",
        linestyle="--",
        linewidth=1,
        label="pixel p99 target @80% (25 ms)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log), open loop at 50% and 80% of each endpoint's max, from the schedule")
    ax.invert_yaxis()
    ax.set_title(chart_title(doc), fontsize=9)
    fig.legend(fontsize=7, ncol=9, loc="lower center")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, help="a results file (default: the newest in bench/results/)")
    ap.add_argument("--charts", action="store_true", help="draw bench/results/ratios.png and latency.png")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--check", action="store_true", help="compare with the committed results (exit 1 on a drop)")
    args = ap.parse_args()
    if args.file:
        doc = json.loads(args.file.read_text())
    else:
        runs = suite_runs()
        if not runs:
            print(
                "no suite results in bench/results/: run `make bench` (or `make bench QUICK=1`) first", file=sys.stderr
            )
            return 2
        doc = runs[-1][1]
    if args.markdown:
        print(markdown(doc))
    else:
        print_table(doc)
    if args.charts:
        for path in draw_charts(doc):
            print(f"chart: {path}")
    if args.check:
        base = committed_run()
        if base is None:
            print(
                "\nno committed suite results to compare with: commit a full run's "
                "bench/results/<date>-<host>.json first",
                file=sys.stderr,
            )
            return 2
        print()
        return check(doc, base[1], base[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
