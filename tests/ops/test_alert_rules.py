"""ops/prometheus/alerts.yml checked by Prometheus' own promtool: the file loads, and its unit tests
(tests/ops/alerts_test.yml) show each alert firing on series that should fire it and silent on
series that should not."""

from pathlib import Path

import yaml

from tests.ops import prometheus
from tests.ops.catalogue import PROMETHEUS_SERIES, series_names
from tests.ops.promql import metric_names

HERE = Path(__file__).resolve().parent
UNIT_TESTS = HERE / "alerts_test.yml"
ALERTS = {
    "SluiceConsumerLagGrowing",
    "SluiceSpoolNotDraining",
    "SluiceWebhookFailures",
    "SluiceRedisFallbackActive",
    "SluiceReadinessFailing",
    "SluiceHighErrorRate",
}
SEVERITIES = {"critical", "warning"}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(prometheus.ALERTS.read_text())["groups"] for rule in group["rules"]]


def completed_unit_tests(directory: Path) -> Path:
    """alerts_test.yml with each expected alert's description and runbook taken from alerts.yml."""
    plain = {rule["alert"]: rule["annotations"] for rule in rules()}
    suite = yaml.safe_load(UNIT_TESTS.read_text())
    suite["rule_files"] = [str(prometheus.ALERTS)]
    for case in suite["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                annotations = plain[check["alertname"]]
                alert["exp_annotations"] = {**alert["exp_annotations"], **{k: annotations[k] for k in plain_keys()}}
    path = directory / "alerts_test.yml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def plain_keys() -> tuple[str, ...]:
    return ("description", "runbook")


def test_promtool_accepts_the_rules(installed_prometheus):
    checked = prometheus.promtool("check", "rules", prometheus.ALERTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_each_alert_fires_on_what_should_fire_it_and_only_then(installed_prometheus, tmp_path):
    tested = prometheus.promtool("test", "rules", completed_unit_tests(tmp_path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_unit_tests_see_every_alert_both_fire_and_stay_silent():
    suite = yaml.safe_load(UNIT_TESTS.read_text())
    checks = [check for case in suite["tests"] for check in case["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    silent = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert fired == ALERTS and silent == ALERTS


def test_every_alert_has_a_severity_and_says_what_to_do():
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        # Only the summary is templated: the unit tests copy the rest verbatim (completed_unit_tests).
        assert all("{{" not in rule["annotations"][key] for key in plain_keys()), rule["alert"]


def test_the_rules_read_only_metrics_sluice_serves():
    known = set(series_names()) | PROMETHEUS_SERIES
    for rule in rules():
        assert metric_names(rule["expr"]) <= known, (rule["alert"], metric_names(rule["expr"]) - known)


def test_the_live_copy_divides_every_duration():
    scaled = {rule["alert"]: rule for group in prometheus.scaled_rules(4)["groups"] for rule in group["rules"]}
    lag = scaled["SluiceConsumerLagGrowing"]
    assert lag["for"] == "15s"
    assert "[30s]" in lag["expr"] and "[2m]" not in lag["expr"]
    assert scaled["SluiceSpoolNotDraining"]["for"] == "150s"
    assert "[150s]" in scaled["SluiceSpoolNotDraining"]["expr"]
    assert "> 1000" in lag["expr"]  # thresholds stay
