"""Endpoint probing end to end: the shipped scrape job discovers the databases from
/sd/databases in Debian's Prometheus, Debian's blackbox_exporter probes the simulator's
endpoints with the shipped module, and ReflexDBDatabaseEndpointDown fires and resolves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerting_helpers import (
    PROBE_JOB,
    BlackboxServer,
    PrometheusServer,
    probe_job,
    write_rules_with_for,
)
from tests.certs import make_certs
from tests.conftest import (
    ROOT,
    Exporter,
    Simulator,
    exporter_config,
    wait_until,
)

pytestmark = pytest.mark.e2e

EXAMPLES = ROOT / "examples" / "blackbox"
JOB = PROBE_JOB
ALERT = "ReflexDBDatabaseEndpointDown"
ODD_NAME = 'we"ird, ünïcode\\name'
ODD_TAGS = [{"label": "a,b", "color": "red"}, {"label": 'q"uote', "color": "blue"}]


@dataclass
class Probing:
    """The simulator, the exporter, blackbox_exporter and Prometheus, wired as a user would."""

    simulator: Simulator
    exporter: Exporter
    prometheus: PrometheusServer

    def targets(self) -> dict[str, dict[str, Any]]:
        """Prometheus' active targets of the probing job, by database_id."""
        body = self.prometheus.http.get("/api/v1/targets", params={"state": "active"}).json()
        return {t["labels"]["database_id"]: t for t in body["data"]["activeTargets"]
                if t["labels"]["job"] == JOB}

    def probe(self, database_id: str) -> float | None:
        """The latest probe_success of one database, or None."""
        found = self.prometheus.query(f'probe_success{{job="{JOB}",database_id="{database_id}"}}')
        return float(found[0]["value"][1]) if found else None

    def firing(self) -> set[str]:
        """The database_ids ReflexDBDatabaseEndpointDown fires for."""
        return {a["labels"]["database_id"] for a in self.prometheus.alerts()
                if a["labels"]["alertname"] == ALERT and a["state"] == "firing"}

    def running(self) -> dict[str, dict[str, Any]]:
        """The simulator's running databases by lowercase ID, with their connection's."""
        out = {}
        for cid, answer in self.simulator.fleet().items():
            for db in answer["databases"]:
                if db["status"] == "running":
                    out[db["id"].lower()] = {**db, "connection_id": cid,
                                             "connection_name": answer["name"]}
        return out


def _blackbox_config(tmp: Path, ca: Path) -> Path:
    """The shipped module, trusting the test CA (the only change)."""
    config = yaml.safe_load((EXAMPLES / "blackbox.yml").read_text(encoding="utf-8"))
    config["modules"]["reflexdb_https"]["http"]["tls_config"] = {"ca_file": str(ca)}
    path = tmp / "blackbox.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def probing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probing]:
    """Everything running, with a database that has odd text in its name and tags."""
    assert shutil.which("prometheus-blackbox-exporter"), "install prometheus-blackbox-exporter"
    tmp = tmp_path_factory.mktemp("probes")
    certs = make_certs(tmp / "certs")
    token = "tok-probes"  # noqa: S105 - the simulator's throwaway token
    simulator = Simulator(tmp, token, connections=2, databases=4, extra_args=[
        "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
        "--serve-endpoints"])
    started: list[Any] = [simulator]
    try:
        cid = simulator.connection_ids[0]
        odd = next(db["id"] for db in simulator.databases(cid) if db["status"] == "running")
        simulator.patch_database(cid, odd, name=ODD_NAME, tags=ODD_TAGS)
        # A paused database keeps its endpointUrl: ?status=running must leave it out.
        paused = next(db["id"] for db in simulator.databases(cid) if db["id"] != odd)
        simulator.patch_database(cid, paused, status="paused", healthStatus=None,
                                 endpointUrl="https://paused.db.reflexdb.cloud")
        config = exporter_config(simulator)
        config["api"]["ca_file"] = str(certs.ca)
        exporter = Exporter(tmp, config, token)
        started.append(exporter)
        blackbox = BlackboxServer(tmp, _blackbox_config(tmp, certs.ca))
        started.append(blackbox)
        rules = write_rules_with_for(tmp / "alerts.yml", "2s", {})
        sd = f"{exporter.url}/sd/databases?status=running"
        assert yaml.safe_load((EXAMPLES / "prometheus.yml").read_text(encoding="utf-8"))[
            "scrape_configs"][0]["http_sd_configs"][0]["url"].endswith(sd.split("/", 3)[3])
        prometheus = PrometheusServer(tmp, [exporter.url.removeprefix("http://")], [rules],
                                      jobs=[probe_job(sd, blackbox.address)])
        started.append(prometheus)
        yield Probing(simulator, exporter, prometheus)
    finally:
        for thing in reversed(started):
            thing.close()


def test_targets_are_exactly_the_running_endpoints_with_their_labels(probing: Probing) -> None:
    """Prometheus' probing targets are the running databases' endpoints (not a paused one's),
    each labelled with its connection_id, database_id and database_name, odd characters
    included."""
    running = probing.running()
    wait_until(lambda: probing.targets().keys() == running.keys(), 30, "the SD targets")
    for database_id, target in probing.targets().items():
        db = running[database_id]
        labels = target["labels"]
        assert labels["instance"] == db["endpointUrl"]
        assert labels["connection_id"] == db["connection_id"]
        assert labels["database_name"] == db["name"]
        discovered = target["discoveredLabels"]
        assert discovered["__meta_reflexdb_status"] == "running"
        assert discovered["__meta_reflexdb_connection_name"] == db["connection_name"]
        assert discovered["__param_module"] == "reflexdb_https"
    odd = next(t for t in probing.targets().values() if t["labels"]["database_name"] == ODD_NAME)
    assert odd["discoveredLabels"]["__meta_reflexdb_tags"] == ',a,b,q"uote,'


def test_a_silent_endpoint_fails_its_probe_and_pages_until_it_answers(
        probing: Probing) -> None:
    """probe_success is 1 for an answering endpoint and 0 once it stops; the alert fires for
    that database alone with its identity, and resolves when it answers again."""
    running = probing.running()
    wait_until(lambda: all(probing.probe(d) == 1 for d in running), 40, "every probe to pass")
    victim = sorted(running)[0]
    db = running[victim]
    probing.simulator.control("PUT", f"connections/{db['connection_id']}/databases/{victim}/"
                              "endpoint", {"answering": False})
    wait_until(lambda: probing.probe(victim) == 0, 20, "the probe to fail")
    assert all(probing.probe(d) == 1 for d in running if d != victim)
    wait_until(lambda: probing.firing() == {victim}, 30, f"{ALERT} to fire")
    alert = next(a for a in probing.prometheus.alerts() if a["labels"]["alertname"] == ALERT)
    assert alert["labels"]["database_name"] == db["name"]
    assert alert["labels"]["connection_id"] == db["connection_id"]
    assert alert["labels"]["connection_name"] == db["connection_name"]
    probing.simulator.control("PUT", f"connections/{db['connection_id']}/databases/{victim}/"
                              "endpoint", {"answering": True})
    wait_until(lambda: probing.probe(victim) == 1 and not probing.firing(), 30,
               "the alert to resolve")


def test_a_database_that_leaves_the_api_leaves_the_targets(probing: Probing) -> None:
    """Removing a database from the API takes its endpoint out of Prometheus' targets."""
    running = probing.running()
    wait_until(lambda: probing.targets().keys() == running.keys(), 30, "the SD targets")
    gone = sorted(running)[-1]
    probing.simulator.control("DELETE", f"connections/{running[gone]['connection_id']}/"
                              f"databases/{gone}")
    wait_until(lambda: probing.targets().keys() == running.keys() - {gone}, 30,
               "the target to leave")
