"""The alert rules and the Alertmanager example: promtool, amtool, and what every alert carries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.metrics import ALL_METRICS
from tests.alerting_helpers import (
    ALERTMANAGER_FILE,
    RULE_TEST_FILES,
    RULES_FILES,
    RUNBOOK,
    RUNBOOK_URL,
    alert_rules,
    recording_rules,
    run_tool,
)

REQUIRED_ALERTS = {
    "ReflexDBDatabaseFailed": "critical",
    "ReflexDBDatabaseCapExceeded": "critical",
    "ReflexDBDatabaseUnreachable": "critical",
    "ReflexDBDatabaseDegraded": "warning",
    "ReflexDBDatabaseStuckTransitioning": "warning",
    "ReflexDBDatabaseDesiredStateNotReached": "warning",
    "ReflexDBDatabasePausedOutsideSchedule": "info",
    "ReflexDBConnectionPollFailing": "warning",
    "ReflexDBConnectionUnauthorized": "critical",
    "ReflexDBDataStale": "warning",
    "ReflexDBExporterDown": "critical",
}
DATABASE_LABELS = ("connection_id", "database_id", "database_name")
ALERTS = alert_rules()
ALERT_IDS = [rule["alert"] for rule in ALERTS]
RECORDS = recording_rules()
RECORD_IDS = [rule["record"] for rule in RECORDS]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    """Anchors of every heading in docs/runbook.md."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", RUNBOOK.read_text(encoding="utf-8"),
                          flags=re.MULTILINE)
    return {github_anchor(h) for h in headings}


def rule_tests() -> list[dict[str, Any]]:
    """Every promtool test case of prometheus/tests/*.yml."""
    return [test for path in RULE_TEST_FILES
            for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]]


@pytest.mark.parametrize("path", RULES_FILES, ids=lambda p: p.name)
def test_promtool_check_rules_is_clean(path: Path) -> None:
    """promtool accepts the rules file (alerts.yml, rules.yml) without a warning."""
    result = run_tool("promtool", "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "WARNING" not in (result.stdout + result.stderr).upper()


def test_rule_group_names_are_unique_across_files() -> None:
    """No two groups of alerts.yml and rules.yml share a name, so one PrometheusRule (the
    Helm chart's) can hold them all."""
    names = [group["name"] for path in RULES_FILES
             for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]]
    assert len(names) == len(set(names)), names


def test_promtool_rule_unit_tests_pass() -> None:
    """Every promtool unit test under prometheus/tests passes against alerts.yml and
    rules.yml."""
    assert RULE_TEST_FILES, "no promtool test files under prometheus/tests"
    result = run_tool("promtool", "test", "rules", *RULE_TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TEST_FILES), result.stdout
    loaded = {(path.parent / rule).resolve() for path in RULE_TEST_FILES
              for rule in yaml.safe_load(path.read_text(encoding="utf-8"))["rule_files"]}
    assert loaded == {path.resolve() for path in RULES_FILES}, "a rules file is never tested"


def test_amtool_accepts_alertmanager_example() -> None:
    """amtool check-config accepts prometheus/alertmanager.yml."""
    result = run_tool("amtool", "check-config", ALERTMANAGER_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("severity", "receiver"), [
    ("critical", "reflexdb-critical"), ("warning", "reflexdb-warning"),
    ("info", "reflexdb-info"), ("none", "reflexdb-warning"),
])
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    """Alertmanager's routing tree sends each severity to its own receiver."""
    result = run_tool("amtool", "config", "routes", "test",
                      f"--config.file={ALERTMANAGER_FILE}", f"severity={severity}",
                      "alertname=ReflexDBDatabaseFailed", "connection_id=c1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_alertmanager_groups_by_connection_and_inhibits_per_database_noise() -> None:
    """The example groups by connection and lets exporter and connection alerts mute the rest."""
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text(encoding="utf-8"))
    assert "connection_id" in config["route"]["group_by"]
    sources = {tuple(rule["source_matchers"]): rule for rule in config["inhibit_rules"]}
    exporter_down = sources[('alertname="ReflexDBExporterDown"',)]
    assert set(exporter_down["equal"]) == {"job", "instance"}
    for source in ("ReflexDBConnectionPollFailing", "ReflexDBConnectionUnauthorized"):
        rule = sources[(f'alertname="{source}"',)]
        assert "connection_id" in rule["equal"]
        assert any("ReflexDBDatabase.+" in matcher for matcher in rule["target_matchers"])


def test_every_required_alert_exists_with_its_severity() -> None:
    """alerts.yml defines every alert the issue names, once, with the severity it names."""
    assert len(ALERT_IDS) == len(set(ALERT_IDS)), "an alert name is repeated"
    severities = {rule["alert"]: rule.get("labels", {}).get("severity") for rule in ALERTS}
    for name, severity in REQUIRED_ALERTS.items():
        assert severities.get(name) == severity, name


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_has_severity_annotations_and_runbook(rule: dict[str, Any]) -> None:
    """The alert has a severity, a summary, a description and a runbook_url to its section."""
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    url = annotations["runbook_url"]
    assert url == f"{RUNBOOK_URL}#{rule['alert'].lower()}"
    assert url.split("#", 1)[1] in runbook_anchors(), f"no runbook heading for {url}"


@pytest.mark.parametrize("rule", [r for r in ALERTS if "reflexdb_database_" in r["expr"]],
                         ids=lambda r: r["alert"])
def test_database_alert_names_database_and_connection(rule: dict[str, Any]) -> None:
    """A database alert joins the connection name and names the database and connection."""
    assert "group_left (connection_name)" in rule["expr"]
    assert "or on (connection_id)" in rule["expr"], "the name join must not drop alerts"
    for text in (rule["annotations"]["summary"], rule["annotations"]["description"]):
        assert "$labels.database_name" in text
        assert "$labels.connection_name" in text


def _output_labels(expr: str) -> list[str]:
    """The labels a recording rule's outermost aggregation keeps: its ``by (...)`` list, and
    the label count_values adds."""
    match = re.match(r"\s*(\w+)\s+by\s*\(([^)]*)\)\s*\(", expr)
    assert match, f"the rule does not start with an aggregation by (...): {expr}"
    labels = [label.strip() for label in match.group(2).split(",")]
    if match.group(1) == "count_values":
        added = re.match(r'\s*"(\w+)"', expr[match.end():])
        assert added, expr
        labels.append(added.group(1))
    return labels


@pytest.mark.parametrize("rule", RECORDS, ids=RECORD_IDS)
def test_recording_rule_is_named_level_metric_operations(rule: dict[str, Any]) -> None:
    """A recording rule is named level:metric:operations: the level lists the labels it
    keeps, in order, the metric is one the exporter exports (or a rule above), and the
    operation is the outermost aggregation."""
    level, metric, operations = rule["record"].split(":")
    expr = rule["expr"]
    assert level == "_".join(_output_labels(expr))
    contract = {spec.name for spec in ALL_METRICS}
    assert metric in contract, metric
    assert re.search(rf"\b{metric}\b", expr), f"{metric} is not what the rule reads"
    outermost = re.match(r"\s*(\w+)", expr)
    assert outermost
    summed = re.fullmatch(r"\s*sum by \([^)]*\) \(\s*\w+:\w+:(count)\s*\)\s*", expr)
    # Counts added up are still counts: the docs drop `sum` beside another operation.
    assert operations == (summed.group(1) if summed else outermost.group(1))
    assert set(re.findall(r"\breflexdb_[a-z_]+\b", expr)) <= contract


def test_every_recording_rule_is_tested() -> None:
    """Each recording rule is the expression of at least one promtool promql_expr_test."""
    tested = {case["expr"].strip() for test in rule_tests()
              for case in test.get("promql_expr_test", [])}
    assert set(RECORD_IDS) <= tested, f"never tested: {set(RECORD_IDS) - tested}"


def test_alert_expressions_use_only_exported_metrics() -> None:
    """Every reflexdb_ metric the rules read is one the exporter's contract defines."""
    contract = {spec.name for spec in ALL_METRICS}
    for rule in ALERTS:
        used = set(re.findall(r"\breflexdb_[a-z_]+\b", rule["expr"]))
        assert used <= contract, f"{rule['alert']}: {used - contract}"


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has a promtool case where it fires and one where it must stay silent."""
    fires: set[str] = set()
    silent: set[str] = set()
    for test in rule_tests():
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert set(ALERT_IDS) <= fires, f"never tested firing: {set(ALERT_IDS) - fires}"
    assert set(ALERT_IDS) <= silent, f"never tested silent: {set(ALERT_IDS) - silent}"


def test_database_alerts_keep_identity_labels_in_promtool_cases() -> None:
    """Every expected database alert in the promtool cases carries the database's identity."""
    database_alerts = {r["alert"] for r in ALERTS if r["alert"].startswith("ReflexDBDatabase")}
    checked = set()
    for test in rule_tests():
        for case in test.get("alert_rule_test", []):
            if case["alertname"] not in database_alerts:
                continue
            for expected in case.get("exp_alerts") or []:
                labels = expected["exp_labels"]
                assert labels.get("connection_id"), case["alertname"]
                assert labels.get("database_id"), case["alertname"]
                if all(labels.get(name) for name in DATABASE_LABELS):
                    checked.add(case["alertname"])
    assert checked == database_alerts, "some database alert never shows all identity labels"
