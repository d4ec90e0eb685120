"""The comparable figures of one suite run: each value next to its ceiling, its ratio and its target.

``extract(name, result)`` turns one benchmark's results document (as its script writes it)
into ``Figure`` rows; ``TARGETS`` holds issue 6's targets, each judged on the ratio or on the
absolute value. The suite stores the figures in the combined results file, so that a file
keeps the figures it was judged by even when this module changes later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

E2E_WINDOW_S = 60  # the end-to-end targets are for a sustained 60 s run


@dataclass(frozen=True)
class Target:
    on: str  # "ratio", "value" (at least), "max" (at most) or "check" (the count check passed)
    threshold: float
    text: str


TARGETS = {
    "pixel": Target("ratio", 0.6, "≥ 0.60 × hello"),
    "pixel_p99_80": Target("max", 25.0, "≤ 25 ms"),
    "workspace": Target("ratio", 0.6, "≥ 0.60 × hello"),
    "e2e_single": Target("value", 10_000, "≥ 10,000/s for 60 s"),
    "e2e_batch50": Target("value", 100_000, "≥ 100,000/s"),
    "consumer": Target("value", 200_000, "≥ 200,000/s"),
    "e2e_single_count": Target("check", 1.0, "stored = sent, 0 doubled"),
    "e2e_batch50_count": Target("check", 1.0, "stored = sent, 0 doubled"),
    "metrics_cost": Target("ratio", 0.97, "≥ 0.97 × metrics off"),
}


@dataclass
class Figure:
    key: str  # stable across runs: what report --check matches on
    name: str
    value: float | None
    unit: str
    ceiling: float | None = None
    ceiling_name: str = ""
    ratio: float | None = None
    better: str = "higher"  # or "lower" (latency)
    status: str = "ok"  # ok, refused, failed, not run
    note: str = ""
    latency: dict = field(default_factory=dict)  # "50%"/"80%" -> {p50_ms, p90_ms, p99_ms, max_ms, offered_rps}
    target: str = ""
    met: bool | None = None  # None: no target, not measured, or not proven (too short a window)
    window_s: float | None = None  # a sustained figure: how long it was sustained
    ceiling_unit: str = ""  # when not the value's unit

    def judge(self) -> Figure:
        t = TARGETS.get(self.key)
        if t is None:
            return self
        self.target = t.text
        if t.on == "check":
            self.met = self.status == "ok"
            return self
        if self.status != "ok" or self.value is None:
            return self
        seen = self.ratio if t.on == "ratio" else self.value
        if seen is not None:
            self.met = seen <= t.threshold if t.on == "max" else seen >= t.threshold - 1e-9
        if self.met and self.window_s is not None and self.window_s < E2E_WINDOW_S - 1:
            self.met = None  # fast enough, but not for long enough to say so
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def failed(name: str, status: str, note: str) -> list[Figure]:
    """Placeholder rows for a benchmark that did not produce figures."""
    return [
        Figure(key, title, None, "", status=status, note=note).judge() for key, title in ROWS.get(name, [(name, name)])
    ]


# The rows each benchmark contributes, in table order (for placeholders when it failed).
ROWS = {
    "http_api": [
        ("pixel", "pixel/track, one event"),
        ("pixel_p99_80", "pixel/track p99 at 80% load"),
        ("pixel-batch50", "pixel/track, batch of 50"),
        ("workspace", "GET workspace, key limiter on"),
        ("usage", "POST entitlements/usage"),
    ],
    "redis_scripts": [("rate_limit", "rate_limit.lua"), ("key_gate", "key_gate.lua")],
    "pixel_e2e": [
        ("e2e_single", "e2e one event/request, into ClickHouse"),
        ("e2e_batch50", "e2e 50 events/request, into ClickHouse"),
    ],
    "consumer": [("consumer", "consumer alone, into chdb")],
    "metrics_cost": [("metrics_cost", "pixel/track, metrics on")],
    "webhooks": [("webhooks", "webhook deliveries")],
    "stats": [
        ("stats_timeseries", "stats: 7-day timeseries, p50"),
        ("stats_top_pages", "stats: top pages, p50"),
        ("stats_top_sources", "stats: top sources, p50"),
        ("stats_countries", "stats: countries, p50"),
    ],
}
HTTP_TITLES = dict(ROWS["http_api"])


def _latency(ep: dict) -> dict:
    keep = ("offered_rps", "achieved_rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "vegeta_cpu_pct", "non_2xx")
    return {load: {k: s[k] for k in keep} for load, s in ep.get("latency", {}).items()}


def http_api(doc: dict) -> list[Figure]:
    eps = doc["endpoints"]
    hello = (eps.get("hello") or {}).get("summary")
    hello_rps = hello["median_rps"] if hello else None
    out = []
    for label, ep in eps.items():
        if label == "hello":
            continue
        title = HTTP_TITLES.get(label, label)
        if ep["refused"] or not ep["summary"]:
            out.append(Figure(label, title, None, "req/s", status="refused", note=ep["refused"] or "no samples"))
            continue
        rps, n = ep["summary"]["median_rps"], ep["events_per_request"]
        value, unit, note = (
            (rps * n, "events/s", f"{rps:,.0f} req/s; ratio = events/s ÷ hello req/s") if n > 1 else (rps, "req/s", "")
        )
        lat = _latency(ep)
        refused_lat = [k for k, v in lat.items() if v["non_2xx"]]
        if refused_lat:
            note = (note + "; " if note else "") + f"latency runs at {', '.join(refused_lat)} had refusals"
        out.append(
            Figure(
                label,
                title,
                value,
                unit,
                hello_rps,
                "hello",
                value / hello_rps if hello_rps else None,
                ceiling_unit="req/s",
                note=note,
                latency=lat,
            )
        )
        if label == "pixel" and "80%" in lat:
            p99 = lat["80%"]
            out.append(
                Figure(
                    "pixel_p99_80",
                    HTTP_TITLES["pixel_p99_80"],
                    p99["p99_ms"],
                    "ms",
                    better="lower",
                    status="refused" if p99["non_2xx"] else "ok",
                    note=f"open loop at {p99['offered_rps']:,.0f} req/s",
                )
            )
    return out


def redis_scripts(doc: dict) -> list[Figure]:
    ops = {k: v["summary"]["median_calls_per_s"] for k, v in doc["operations"].items()}
    return [
        Figure(
            name, f"{name}.lua (Python client)", ops[name], "calls/s", ops["get"], "Redis GET", ops[name] / ops["get"]
        )
        for name in ("rate_limit", "key_gate")
    ]


def pixel_e2e(doc: dict) -> list[Figure]:
    out = []
    for name, p in doc["phases"].items():
        key, title = f"e2e_{name}", dict(ROWS["pixel_e2e"]).get(f"e2e_{name}", name)
        if p["refused"]:
            out.append(Figure(key, title, None, "events/s", status="refused", note=p["refused"]))
            continue
        short = (
            f"; {p['window_s']:.0f} s window, the target is for {E2E_WINDOW_S} s"
            if p["window_s"] < E2E_WINDOW_S - 1
            else f"; {p['window_s']:.0f} s window"
        )
        out.append(
            Figure(
                key,
                title,
                p["stored_events_per_s"],
                "events/s",
                p["http_events_per_s"],
                "accepted over HTTP",
                p["stored_events_per_s"] / p["http_events_per_s"],
                note=f"last row {p['drain_s']:.1f} s after the last request{short}",
                window_s=p["window_s"] if key == "e2e_single" else None,
            )
        )
        doubled = p["stored"] - p["distinct"]
        out.append(
            Figure(
                f"{key}_count",
                f"  count check ({name})",
                p["stored"],
                "rows",
                p["accepted"],
                "answered 2xx",
                p["stored"] / p["accepted"] if p["accepted"] else None,
                status="ok" if p["ok"] else "refused",
                note=f"{p['distinct']:,} distinct ids, {doubled:,} doubled; wrk saw {p['wrk_events']:,}",
            )
        )
        out.append(Figure(f"{key}_drain", f"  last request → last row ({name})", p["drain_s"], "s", better="lower"))
    return out


def consumer(doc: dict) -> list[Figure]:
    rows, plain = doc["consumer"]["rows_per_s"], doc.get("plain_insert", {}).get("rows_per_s_insert_only")
    return [
        Figure(
            "consumer",
            ROWS["consumer"][0][1],
            rows,
            "rows/s",
            plain,
            "plain clickhouse-connect insert",
            rows / plain if plain else None,
            note=f"{doc.get('rows', 0):,} rows",
        )
    ]


def webhooks(doc: dict) -> list[Figure]:
    sent, raw = doc["dispatcher"]["deliveries_per_s"], doc["raw_posts"]["posts_per_s"]
    return [
        Figure(
            "webhooks",
            ROWS["webhooks"][0][1],
            sent,
            "deliv/s",
            raw,
            "raw httpx POSTs",
            sent / raw,
            ceiling_unit="POST/s",
            note=f"attempt p99 {doc['dispatcher']['attempt_p99_ms']} ms",
        )
    ]


def stats(doc: dict) -> list[Figure]:
    titles, out = dict(ROWS["stats"]), []
    for name, q in doc["queries"].items():
        ways, same = q["ways"], q.get("same_answer", {})
        planner, raw = ways["planner"], ways["raw_sql"]
        over_http = f"; over HTTP {ways['http']['p50_ms']:,.1f} ms" if "http" in ways else ""
        differ = [way for way, ok in same.items() if not ok]
        out.append(
            Figure(
                f"stats_{name}",
                titles.get(f"stats_{name}", name),
                planner["p50_ms"],
                "ms",
                raw["p50_ms"],
                "hand-written SQL on events",
                planner["p50_ms"] / raw["p50_ms"] if raw["p50_ms"] else None,
                better="lower",
                status="refused" if differ else "ok",
                note=f"from {q['source']}; p99 {planner['p99_ms']:,.1f} ms; its SQL alone "
                f"{ways['planned_sql']['p50_ms']:,.1f} ms{over_http}; {doc['seed']['events']:,} events"
                + (f"; answers differ: {', '.join(differ)}" if differ else ""),
            )
        )
    return out


def metrics_cost(doc: dict) -> list[Figure]:
    on, off = (doc["sides"][side]["summary"]["median_rps"] for side in ("on", "off"))
    return [
        Figure(
            "metrics_cost",
            dict(ROWS["metrics_cost"])["metrics_cost"],
            on,
            "req/s",
            off,
            "the same server, metrics off",
            on / off if off else None,
            note=f"cost {doc['cost']:.1%} (median of round pairs {doc['median_cost_by_round']:.1%}); "
            f"CPU per request {doc['cpu_cost']:+.1%}; rounds alternate on, off",
        )
    ]


EXTRACTORS = {
    "http_api": http_api,
    "redis_scripts": redis_scripts,
    "pixel_e2e": pixel_e2e,
    "consumer": consumer,
    "webhooks": webhooks,
    "stats": stats,
    "metrics_cost": metrics_cost,
}


def extract(name: str, result: dict) -> list[Figure]:
    return [f.judge() for f in EXTRACTORS[name](result)]


def from_dict(d: dict) -> Figure:
    return Figure(**{k: v for k, v in d.items() if k in Figure.__dataclass_fields__})
