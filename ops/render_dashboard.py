"""Draws the main panels of the Grafana dashboard (ops/grafana/sluice-dashboard.json) as one PNG,
from what a real Prometheus recorded: the panels' own queries, run over a time range with
query_range, so the picture shows what the dashboard would.

    python ops/render_dashboard.py --prometheus http://127.0.0.1:9090 --start 1700000000 --end 1700000600 \
        --out ops/dashboard.png
    python ops/render_dashboard.py --data run.json --out ops/dashboard.png   # from a saved --save run.json

ops/dashboard.png comes from tests/ops/test_prometheus_live.py (a stack under load, its ingest worker
stopped, then started again), which runs this script; to draw it again:
    SLUICE_DASHBOARD_PNG=ops/dashboard.png make test PYTEST_ARGS="tests/ops/test_prometheus_live.py"
Collecting needs httpx only; drawing needs matplotlib (`make bench-tools` installs it).
"""

import argparse
import json
import re
import sys
from pathlib import Path

import httpx

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "sluice-dashboard.json"
# The panels drawn, by their titles in the dashboard.
PANELS = (
    "Requests per second by route and status",
    "Consumer group lag (from Kafka)",
    "Spool",
    "Outbox backlog",
)
# At most this many series a panel, the largest; a PNG legend has no scroll bar.
MAX_SERIES = 6
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
DPI = 80
# Grafana's unit ids, as an axis label.
UNITS = {"reqps": "requests/s", "short": "", "bytes": "bytes", "s": "seconds", "percentunit": "share"}


def panel_queries(titles=PANELS, dashboard: Path = DASHBOARD) -> list[dict]:
    panels = {p["title"]: p for p in json.loads(dashboard.read_text())["panels"] if p["type"] != "row"}
    missing = [t for t in titles if t not in panels]
    if missing:
        raise SystemExit(f"no panel titled {missing} in {dashboard}")
    return [
        {
            "title": title,
            "unit": panels[title]["fieldConfig"]["defaults"].get("unit", "short"),
            "targets": [(t["expr"], t.get("legendFormat", "")) for t in panels[title]["targets"]],
        }
        for title in titles
    ]


def legend(template: str, labels: dict) -> str:
    return LEGEND.sub(lambda m: labels.get(m[1], ""), template).strip() or str(labels)


def collect(prometheus: str, start: float, end: float, step: float, rate_interval: str, marks=()) -> dict:
    """The panels' series over [start, end] from Prometheus' HTTP API."""
    panels = []
    for panel in panel_queries():
        series = []
        for expr, template in panel["targets"]:
            query = expr.replace("$__rate_interval", rate_interval)
            r = httpx.get(
                f"{prometheus}/api/v1/query_range",
                params={"query": query, "start": start, "end": end, "step": step},
                timeout=60,
            )
            r.raise_for_status()
            for result in r.json()["data"]["result"]:
                points = [[float(t), float(v)] for t, v in result["values"]]
                series.append({"legend": legend(template, result["metric"]), "points": points})
        series.sort(key=lambda s: -max((v for _, v in s["points"]), default=0))
        panels.append({"title": panel["title"], "unit": panel["unit"], "series": series[:MAX_SERIES]})
    return {"start": start, "end": end, "marks": [list(mark) for mark in marks], "panels": panels}


def render(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = data["start"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5), sharex=True)
    for ax, panel in zip(axes.flat, data["panels"], strict=False):
        for series in panel["series"]:
            xs = [t - start for t, _ in series["points"]]
            ax.plot(xs, [v for _, v in series["points"]], linewidth=1.2, label=series["legend"])
        for at, label in data["marks"]:
            ax.axvline(at - start, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(
                label,
                (at - start, 1),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
                color="dimgrey",
            )
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(UNITS.get(panel["unit"], panel["unit"]), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if panel["series"]:
            ax.legend(fontsize=6, loc="upper left")
        if not any(v for series in panel["series"] for _, v in series["points"]):
            ax.set_ylim(0, 1)
            nothing = "all zero during the run" if panel["series"] else "no data"
            ax.text(0.5, 0.5, nothing, transform=ax.transAxes, ha="center", color="grey")
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the run", fontsize=8)
    fig.suptitle("Sluice under load: the ingest worker stopped, then started again", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", help="base URL of the Prometheus to read")
    parser.add_argument("--start", type=float, help="unix time")
    parser.add_argument("--end", type=float, help="unix time")
    parser.add_argument("--step", type=float, default=5.0, help="seconds between points (default 5)")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for (default 1m)")
    parser.add_argument("--mark", action="append", default=[], metavar="UNIXTIME=LABEL", help="a dashed line")
    parser.add_argument("--data", type=Path, help="draw this saved run instead of asking Prometheus")
    parser.add_argument("--save", type=Path, help="save the collected series here (JSON)")
    parser.add_argument("--out", type=Path, help="the PNG to write")
    args = parser.parse_args()
    if args.data:
        data = json.loads(args.data.read_text())
    elif args.prometheus and args.start and args.end:
        marks = [(float(at), label) for at, label in (mark.split("=", 1) for mark in args.mark)]
        data = collect(args.prometheus, args.start, args.end, args.step, args.rate_interval, marks)
    else:
        parser.error("give --data, or --prometheus with --start and --end")
    if args.save:
        args.save.write_text(json.dumps(data))
    if args.out:
        render(data, args.out)
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)", file=sys.stderr)


if __name__ == "__main__":
    main()
