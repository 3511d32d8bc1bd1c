"""The alert rules and Alertmanager config, end to end with Debian's real programs on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerting_helpers import (
    RUNBOOK_URL,
    AlertmanagerServer,
    PrometheusServer,
    WebhookSink,
    alertmanager_test_config,
    write_rules_with_for,
)
from tests.conftest import Exporter, Simulator, exporter_config, wait_until

# for: in the rules under test. The exporter's first scrape may land an evaluation after the
# first one, so ReflexDBExporterDown's absent() may hold for a second at start: give it longer.
SHORT_FOR = "2s"
FOR_OVERRIDES = {"ReflexDBExporterDown": "15s"}

AlertKey = tuple[str, str, str]


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    """A webhook receiver on loopback that records Alertmanager's notifications."""
    webhook = WebhookSink()
    yield webhook
    webhook.close()


@pytest.fixture
def alertmanager(tmp_path: Path, sink: WebhookSink) -> Iterator[AlertmanagerServer]:
    """Alertmanager running the shipped routing and inhibition, posting to the sink."""
    server = AlertmanagerServer(tmp_path, alertmanager_test_config(sink))
    yield server
    server.close()


@pytest.fixture
def start_prometheus(tmp_path: Path, alertmanager: AlertmanagerServer) -> Iterator[
        Callable[[list[str]], PrometheusServer]]:
    """Start Prometheus on demand with alerts.yml (short for:) sending to the Alertmanager."""
    started: list[PrometheusServer] = []
    rules = write_rules_with_for(tmp_path / "alerts.yml", SHORT_FOR, FOR_OVERRIDES)

    def start(targets: list[str]) -> PrometheusServer:
        server = PrometheusServer(tmp_path, targets, [rules], alertmanager.address)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def key(alert: dict[str, Any]) -> AlertKey:
    """What tells alerts apart here: alert name, connection and database."""
    labels = alert["labels"]
    return (labels["alertname"], labels.get("connection_id", ""), labels.get("database_id", ""))


def first_running(sim: Simulator, connection_id: str) -> dict[str, Any]:
    """The first running, healthy database record of a connection."""
    return next(db for db in sim.databases(connection_id)
                if db["status"] == "running" and db["healthStatus"] == "ok")


@pytest.mark.e2e
def test_database_alerts_page_through_alertmanager_and_resolve(
        simulator: Simulator, start_exporter: Callable[..., Exporter],
        start_prometheus: Callable[[list[str]], PrometheusServer], sink: WebhookSink) -> None:
    """A cap_exceeded and a failed database each reach the webhook with their identity and
    names, nothing else fires for the healthy fleet, and both resolve after recovery."""
    exporter = start_exporter(exporter_config(simulator))
    prometheus = start_prometheus([exporter.url.removeprefix("http://")])
    wait_until(lambda: prometheus.query('up{job="reflexdb"} == 1'), timeout=20,
               what="Prometheus to scrape the exporter")

    fleet = simulator.fleet()
    conn_a, conn_b = simulator.connection_ids[:2]
    db_a, db_b = first_running(simulator, conn_a), first_running(simulator, conn_b)
    simulator.patch_database(conn_a, db_a["id"], healthStatus="cap_exceeded")
    simulator.patch_database(conn_b, db_b["id"], status="failed")
    expected = {
        ("ReflexDBDatabaseCapExceeded", conn_a.lower(), db_a["id"].lower()):
            (db_a["name"], fleet[conn_a.lower()]["name"]),
        ("ReflexDBDatabaseFailed", conn_b.lower(), db_b["id"].lower()):
            (db_b["name"], fleet[conn_b.lower()]["name"]),
    }

    def delivered(status: str) -> dict[AlertKey, tuple[dict[str, Any], dict[str, Any]]]:
        return {key(alert): (notification, alert) for notification, alert
                in sink.alerts(status) if key(alert) in expected}

    firing = wait_until(lambda: len(delivered("firing")) == 2 and delivered("firing"),
                        timeout=30, what="both alerts to reach the webhook")
    for alert_key, (notification, alert) in firing.items():
        database_name, connection_name = expected[alert_key]
        labels = alert["labels"]
        assert labels["severity"] == "critical"
        assert labels["database_name"] == database_name
        assert labels["connection_name"] == connection_name
        assert notification["receiver"] == "reflexdb-critical"
        assert notification["path"] == "/reflexdb-critical"
        assert notification["groupLabels"] == {"alertname": labels["alertname"],
                                               "connection_id": labels["connection_id"]}
        summary = alert["annotations"]["summary"]
        assert database_name in summary
        assert connection_name in summary
        assert alert["annotations"]["runbook_url"] == (
            f"{RUNBOOK_URL}#{labels['alertname'].lower()}")
    # The rest of the fleet is running, registered or in its pause window: nothing else
    # fires or is even pending in Prometheus.
    assert {key(alert) for alert in prometheus.alerts()} == set(expected)

    simulator.patch_database(conn_a, db_a["id"], healthStatus="ok")
    simulator.patch_database(conn_b, db_b["id"], status="running")
    resolved = wait_until(lambda: len(delivered("resolved")) == 2 and delivered("resolved"),
                          timeout=30, what="both resolutions to reach the webhook")
    assert set(resolved) == set(expected)
    assert {key(alert) for _, alert in sink.alerts()} == set(expected), \
        "an alert other than the two expected reached Alertmanager's receivers"
    # Each wait above has its own bound; no cap on their sum, which a loaded machine may
    # need in full.
    wait_until(lambda: prometheus.alerts() == [], what="Prometheus to drop the alerts")


def am_alert(alertname: str, severity: str, instance: str = "exporter-a:10510",
             **labels: str) -> dict[str, Any]:
    """An alert as Prometheus would send it for the reflexdb job."""
    return {"labels": {"alertname": alertname, "severity": severity, "job": "reflexdb",
                       "instance": instance, **labels},
            "annotations": {"summary": alertname}}


@pytest.mark.e2e
def test_alertmanager_routes_groups_and_inhibits(alertmanager: AlertmanagerServer,
                                                 sink: WebhookSink) -> None:
    """The shipped Alertmanager config routes by severity, sends a connection's databases in
    one notification, and never notifies alerts muted by an outage that explains them."""
    sources = [
        am_alert("ReflexDBExporterDown", "critical", instance="exporter-b:10510"),
        am_alert("ReflexDBConnectionUnauthorized", "critical", connection_id="c1"),
        am_alert("ReflexDBConnectionPollFailing", "warning", connection_id="c2"),
        am_alert("ReflexDBDatabaseFailed", "critical", connection_id="c3", database_id="d5",
                 database_name="orders"),
        am_alert("ReflexDBDatabaseFailed", "critical", connection_id="c3", database_id="d6",
                 database_name="billing"),
    ]
    inhibited = [
        # exporter-b is down.
        am_alert("ReflexDBDatabaseDegraded", "warning", instance="exporter-b:10510",
                 connection_id="c9", database_id="d9", database_name="ledger"),
        # c1's token is rejected.
        am_alert("ReflexDBConnectionPollFailing", "warning", connection_id="c1"),
        am_alert("ReflexDBDataStale", "warning", connection_id="c1"),
        am_alert("ReflexDBDatabaseFailed", "critical", connection_id="c1", database_id="d1",
                 database_name="events"),
        am_alert("ReflexDBDatabaseUnreachable", "critical", connection_id="c1",
                 database_id="d2", database_name="users"),
        # c2 cannot be polled.
        am_alert("ReflexDBDatabaseStuckTransitioning", "warning", connection_id="c2",
                 database_id="d3", database_name="crm", status="building"),
        # d5 has failed.
        am_alert("ReflexDBDatabaseUnreachable", "critical", connection_id="c3",
                 database_id="d5", database_name="orders"),
    ]
    independent = [
        # Same connection as the failed d5, but another database and alert.
        am_alert("ReflexDBDatabaseDegraded", "warning", connection_id="c3", database_id="d8",
                 database_name="search"),
        am_alert("ReflexDBDatabasePausedOutsideSchedule", "info", connection_id="c3",
                 database_id="d7", database_name="audit", status="paused"),
    ]
    alertmanager.post(sources)
    wait_until(lambda: len(alertmanager.alerts()) == len(sources),
               what="Alertmanager to hold the source alerts")
    alertmanager.post(inhibited + independent)

    def suppressed() -> set[AlertKey]:
        return {key(a) for a in alertmanager.alerts()
                if a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]}

    wanted = {key(a) for a in sources + independent}
    muted = {key(a) for a in inhibited}
    wait_until(lambda: suppressed() == muted, what="the inhibited alerts to be suppressed")
    wait_until(lambda: {key(a) for _, a in sink.alerts()} >= wanted,
               what="every alert that is not inhibited to be notified")
    time.sleep(3)  # three group intervals: anything muted wrongly would be notified by now

    notifications = sink.notifications()
    assert not {key(a) for _, a in sink.alerts()} & muted
    receivers = {key(a): n["receiver"] for n, a in sink.alerts()}
    for alert in sources + independent:
        expected_receiver = f"reflexdb-{alert['labels']['severity']}"
        assert receivers[key(alert)] == expected_receiver, key(alert)
    grouped = [n for n in notifications
               if n["groupLabels"] == {"alertname": "ReflexDBDatabaseFailed",
                                       "connection_id": "c3"}]
    assert grouped, "no notification for the failed databases of c3"
    assert {a["labels"]["database_id"] for a in grouped[0]["alerts"]} == {"d5", "d6"}
