"""The landing page's facts agree with the metrics and the binary: the version, each
connection's database count, last success, last failure and its reason, as they change."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import ROOT, Exporter, Simulator, exporter_config, wait_until
from tests.test_page import Tables

pytestmark = pytest.mark.e2e


def _utc(timestamp: float | None) -> str:
    """A timestamp as the page writes it, to the second."""
    assert timestamp is not None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _connection_rows(exporter: Exporter) -> dict[str, list[str]]:
    """The connections table's cells by connection ID."""
    parser = Tables()
    parser.feed(exporter.http.get("/").text)
    table = next(t for t in parser.tables if t and t[0][:2] == [("Name", ""), ("Connection", "")])
    return {row[1][0]: [text for text, _ in row] for row in table[1:]}


def test_the_page_names_the_version_the_binary_reports(
        simulator: Simulator, exporter: Exporter) -> None:
    """The page's "Version X." is the version `--version` prints and build_info carries."""
    printed = subprocess.run([sys.executable, "-m", "exporter", "--version"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    version = printed.split("version ", 1)[1].split(" ", 1)[0]
    [(labels, _)] = exporter.scrape().series("reflexdb_exporter_build_info")
    assert labels["version"] == version
    assert f"Version {version}." in exporter.http.get("/").text


def test_connection_rows_match_the_metrics_as_polls_succeed_and_fail(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Each connection's row shows its database count, its last success and last failure
    at the metrics' own timestamps, and the latest failure reason as it changes."""
    exporter = start_exporter(exporter_config(simulator, poll_interval="2s"))
    first, second, _ = (cid.lower() for cid in simulator.connection_ids)
    ids = {"connection_id": first}
    removed = simulator.databases(first)[0]["id"]
    simulator.control("DELETE", f"connections/{first}/databases/{removed}")
    exporter.wait_for(lambda s: s.value("reflexdb_connection_databases", **ids) == 3,
                      what="the removal seen")

    def agree(reason: str | None) -> bool:
        scrape = exporter.scrape()
        row = _connection_rows(exporter)[first]
        success = scrape.value("reflexdb_connection_last_success_timestamp_seconds", **ids)
        failure = scrape.value("reflexdb_connection_last_failure_timestamp_seconds", **ids)
        shown_failure = row[5].startswith(_utc(failure)) if failure else row[5] == ""
        return (row[3] == str(int(scrape.value("reflexdb_connection_databases", **ids) or -1))
                and row[4].startswith(_utc(success) + " (") and shown_failure
                and row[6] == (reason or "")
                and row[2] == ("up" if reason is None else "down"))

    wait_until(lambda: agree(None), timeout=20, what="a healthy row to match")
    assert _connection_rows(exporter)[first][3] == "3"
    assert _connection_rows(exporter)[second][3] == "4"
    simulator.fault(first, status=403, body='{"error": "forbidden"}')
    wait_until(lambda: agree("forbidden"), timeout=20, what="the forbidden row to match")
    simulator.fault(first, status=404, body='{"error": "not_found"}')
    wait_until(lambda: agree("not_found"), timeout=20, what="the not_found row to match")
    row = _connection_rows(exporter)[first]
    assert row[3] == "3"  # the last good answer's databases, still shown while failing
    simulator.clear_fault(first)
    # Back up: the last failure and its reason stay on the page, the state says up.
    wait_until(lambda: _connection_rows(exporter)[first][2] == "up", timeout=20,
               what="the connection back up")
    row = _connection_rows(exporter)[first]
    assert row[6] == "not_found"
    assert row[5] != ""
