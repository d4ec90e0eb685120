"""ops/grafana/sluice-dashboard.json against the catalogue of metrics (tests/ops/catalogue.py), and
the catalogue against the code: a metric renamed, added or dropped on one side fails here."""

import importlib.util
import json
import re
from pathlib import Path

from tests.ops.catalogue import METRICS, PROCESS_SERIES, PROMETHEUS_SERIES, series_names
from tests.ops.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "sluice-dashboard.json"
RENDER = ROOT / "ops" / "render_dashboard.py"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SOURCES = ("app", "ingest", "storage")
# A metric declared in code: Counter("sluice_…", …), Gauge(…), … or through a helper named for its
# type, counter("sluice_…", …); a counter's name may leave its `_total` to prometheus_client.
DECLARED = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary|counter|gauge|histogram)\(\s*\"(sluice_\w+)\"")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def exprs() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel["targets"]]


def python_sources() -> dict[Path, str]:
    return {path: path.read_text() for source in SOURCES for path in sorted((ROOT / source).rglob("*.py"))}


def test_the_dashboard_is_a_current_grafana_dashboard_with_a_prometheus_source_variable():
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_no_two_panels_overlap():
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert g["x"] + g["w"] <= 24 and not cells & taken, panel["title"]
        taken |= cells


def test_every_panel_reads_only_metrics_sluice_serves():
    known = set(series_names()) | PROMETHEUS_SERIES | PROCESS_SERIES
    for title, expr in exprs():
        names = metric_names(expr)
        assert names and names <= known, (title, expr, names - known)


def test_every_metric_has_a_panel():
    shown = {series_names().get(name) for _, expr in exprs() for name in metric_names(expr)}
    assert set(METRICS) - shown == set()


def test_histograms_are_read_as_quantiles_of_their_buckets():
    for title, expr in exprs():
        for name in metric_names(expr):
            if name.endswith("_bucket"):
                assert expr.startswith("histogram_quantile(") and "by (le" in expr, (title, expr)


def test_the_code_declares_exactly_the_catalogued_metrics():
    declared = {name.removesuffix("_total") for text in python_sources().values() for name in DECLARED.findall(text)}
    catalogued = {name.removesuffix("_total") for name in METRICS}
    assert catalogued - declared == set(), "catalogued but declared nowhere in app/, ingest/, storage/"
    assert declared - catalogued == set(), "declared but not in tests/ops/catalogue.py (nor the dashboard)"


def render_module():
    spec = importlib.util.spec_from_file_location("render_dashboard", RENDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_picture_draws_panels_the_dashboard_has():
    panels = render_module().panel_queries()
    assert [p["title"] for p in panels] == list(render_module().PANELS)
    assert all(p["targets"] for p in panels)


def test_the_picture_of_a_run_is_a_small_png(tmp_path):
    render = render_module()
    points = [[1000.0 + t, float(t % 50)] for t in range(0, 600, 2)]
    panels = [
        {"title": p["title"], "unit": p["unit"], "series": [{"legend": "x", "points": points}]}
        for p in render.panel_queries()
    ]
    panels[2]["series"] = []
    out = tmp_path / "run.png"
    render.render({"start": 1000.0, "end": 1600.0, "marks": [[1200.0, "worker stopped"]], "panels": panels}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size < 200_000
