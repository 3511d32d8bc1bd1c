"""promtool, Prometheus' own linter, accepts what the exporter serves."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import Exporter, Simulator

pytestmark = pytest.mark.e2e


def test_promtool_check_metrics(simulator: Simulator, exporter: Exporter) -> None:
    """``promtool check metrics`` finds no problem in a full scrape, odd values included."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    connection_id = simulator.connection_ids[0]
    db = simulator.databases(connection_id)[0]
    simulator.patch_database(connection_id, db["id"], status="hibernating",
                             name='quote " and \\ and\nnewline', desiredState="running")
    exporter.wait_for(lambda s: s.series("reflexdb_database_status", status="hibernating"))
    body = exporter.http.get("/metrics").text
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""
