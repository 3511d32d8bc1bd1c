"""/sd/databases: Prometheus HTTP service discovery of the databases' endpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from tests.conftest import Exporter, Simulator, exporter_config, wait_until

pytestmark = pytest.mark.e2e

META = "__meta_reflexdb_"


def listed(exporter: Exporter, query: str = "") -> dict[str, dict[str, str]]:
    """The SD answer as {database_id: labels}, checking each group's shape on the way."""
    response = exporter.http.get(f"/sd/databases{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    out = {}
    for group in response.json():
        assert set(group) == {"targets", "labels"}
        assert len(group["targets"]) == 1
        labels = group["labels"]
        assert all(isinstance(v, str) for v in labels.values())
        out[labels[f"{META}database_id"]] = {**labels, "target": group["targets"][0]}
    return out


def expected(fleet: dict[str, Any], keep: Callable[[dict[str, Any]], bool] = lambda _: True
             ) -> dict[str, dict[str, str]]:
    """What the SD answer should hold for the simulator's fleet, written out again."""
    out = {}
    for cid, answer in fleet.items():
        for db in answer["databases"]:
            if not db.get("endpointUrl") or not keep(db):
                continue
            domain = db.get("reflexdbCustomDomain")
            out[db["id"].lower()] = {
                f"{META}connection_id": cid, f"{META}connection_name": answer["name"],
                f"{META}database_id": db["id"].lower(),
                f"{META}database_name": db["name"], f"{META}status": db["status"],
                f"{META}health_status": db["healthStatus"] or "unknown",
                f"{META}region": db["region"], f"{META}instance_size": db["instanceSize"],
                f"{META}custom_domain": f"{domain}.reflexdb.cloud" if domain else "",
                f"{META}tags": "," + ",".join(t["label"] for t in db["tags"]) + ",",
                "target": db["endpointUrl"]}
    return out


def test_sd_lists_every_endpoint_with_its_labels(simulator: Simulator,
                                                 exporter: Exporter) -> None:
    """Every database with an endpointUrl is one target group, labelled from its record."""
    fleet = simulator.fleet()
    want = expected(fleet)
    assert want, "the fleet has no endpoint to list"
    assert wait_until(lambda: listed(exporter) == want, 15, "the SD answer")


def test_filters_select_by_status_and_health(simulator: Simulator, exporter: Exporter) -> None:
    """status and health_status filter, each repeatable or comma-separated, both at once
    meaning both; an unknown parameter is a 400 naming it."""
    connection = simulator.connection_ids[0]
    first, second = (db["id"] for db in simulator.databases(connection)[:2])
    simulator.patch_database(connection, first, status="paused", healthStatus=None,
                             endpointUrl="https://paused.example")
    simulator.patch_database(connection, second, status="running", healthStatus="degraded",
                             endpointUrl="https://degraded.example")
    fleet = simulator.fleet()
    # A poll may land between the two patches: wait for the list to hold both.
    wait_until(lambda: listed(exporter) == expected(fleet), 15, "both patches")
    cases = {
        "?status=running": lambda db: db["status"] == "running",
        "?status=running&status=paused": lambda db: db["status"] in ("running", "paused"),
        "?status=running,paused": lambda db: db["status"] in ("running", "paused"),
        "?health_status=unknown": lambda db: db["healthStatus"] is None,
        "?status=running&health_status=degraded":
            lambda db: db["status"] == "running" and db["healthStatus"] == "degraded",
        "?status=failed": lambda db: db["status"] == "failed",
    }
    for query, keep in cases.items():
        assert listed(exporter, query) == expected(fleet, keep), query
    assert listed(exporter, "?status=running&health_status=degraded").keys() == {
        second.lower()}
    refused = exporter.http.get("/sd/databases?state=running")
    assert refused.status_code == 400
    assert "unknown query parameter 'state'" in refused.text


def test_removed_and_stale_databases_leave_with_their_series(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """A database gone from the API leaves the list at the next poll; a connection whose
    data went stale takes its databases off the list when their series leave /metrics."""
    exporter = start_exporter(exporter_config(simulator, stale_after="3s"))
    first, second = simulator.connection_ids[:2]
    gone = next(db["id"].lower() for db in simulator.databases(first) if db["endpointUrl"])
    assert gone in listed(exporter)
    simulator.control("DELETE", f"connections/{first}/databases/{gone}")
    wait_until(lambda: gone not in listed(exporter), 15, "the removed database to leave")
    mine = {db["id"].lower() for db in simulator.databases(second) if db["endpointUrl"]}
    assert mine <= listed(exporter).keys()
    simulator.fault(second, status=500, body='{"error": "internal"}')

    def both_gone() -> bool:
        series = exporter.scrape().series("reflexdb_database_info",
                                          connection_id=second.lower())
        return not series and not (mine & listed(exporter).keys())

    wait_until(both_gone, 30, "the stale connection's databases to leave")
    simulator.clear_fault(second)
    wait_until(lambda: mine <= listed(exporter).keys(), 15, "them to come back")


def test_sd_needs_credentials_with_basic_auth(simulator: Simulator,
                                              start_exporter: Callable[..., Exporter],
                                              tmp_path: Path) -> None:
    """With basic auth in the web config, /sd/databases answers 401 without credentials and
    the list with them."""
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {
        "prometheus": bcrypt.hashpw(b"sd-secret", bcrypt.gensalt(4)).decode()}}))
    exporter = start_exporter(exporter_config(simulator), wait_ready=False,
                              extra_args=[f"--web.config.file={web}"])
    url = f"{exporter.url}/sd/databases"
    wait_until(lambda: httpx.get(url, timeout=5).status_code == 401, 20, "the exporter")
    assert httpx.get(url, auth=("prometheus", "wrong"), timeout=5).status_code == 401
    want = set(expected(simulator.fleet()))

    def answered() -> set[str]:
        answer = httpx.get(url, auth=("prometheus", "sd-secret"), timeout=5).json()
        return {group["labels"][f"{META}database_id"] for group in answer}

    wait_until(lambda: answered() == want, 20, "the whole list")
