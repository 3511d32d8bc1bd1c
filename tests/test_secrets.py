"""The API token reaches the API as a bearer header and appears nowhere else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Exporter, Simulator, exporter_config, wait_until

pytestmark = pytest.mark.e2e


def test_token_only_in_the_authorization_header(
        simulator: Simulator, start_exporter: Callable[..., Exporter], token: str,
        tmp_path: Path) -> None:
    """Requests carry ``Bearer <token>`` and the token is in no log line, metric or page."""
    # A connection under another account whose token is wrong adds failure paths to the logs.
    other = tmp_path / "other-token"
    other.write_text("tok-other-account-secret\n")
    config = exporter_config(simulator, connections=[
        {"id": simulator.connection_ids[0]},
        {"id": simulator.connection_ids[1], "token_file": str(other)},
        {"id": simulator.connection_ids[2]}])
    # An API that echoes the token in its {error, message} body: the client puts that text
    # in the failure's detail, which the "poll failed" line logs, so redaction must run.
    simulator.fault(simulator.connection_ids[2], status=500, body=json.dumps(
        {"error": "internal", "message": f"token {token} hit a bug"}))
    exporter = start_exporter(config)
    exporter.wait_for(lambda s: (s.value("reflexdb_connection_poll_failures_total",
                                         connection_id=simulator.connection_ids[1].lower(),
                                         reason="unauthorized") or 0) >= 2
                      and (s.value("reflexdb_connection_poll_failures_total",
                                   connection_id=simulator.connection_ids[2].lower(),
                                   reason="server_error") or 0) >= 1)
    requests = simulator.requests()
    assert requests
    for request in requests:
        sent = request["headers"]["authorization"]
        assert sent in (f"Bearer {token}", "Bearer tok-other-account-secret")
        others = {k: v for k, v in request["headers"].items() if k != "authorization"}
        assert token not in str(others)
        assert token not in request["path"]
        assert token not in str(request["query"])
    assert {r["headers"]["authorization"] for r in requests} == {
        f"Bearer {token}", "Bearer tok-other-account-secret"}
    pages = [exporter.http.get(p).text for p in ("/metrics", "/", "/-/ready", "/-/healthy")]
    for secret in (token, "tok-other-account-secret"):
        assert all(secret not in page for page in pages)
        assert secret not in exporter.logs()
    # The redacted text did reach the log: the paths above ran.
    echoed = [line for line in exporter.logs().splitlines()
              if "poll failed" in line and "hit a bug" in line]
    assert echoed, exporter.logs()[-3000:]
    assert all("token <redacted> hit a bug" in line for line in echoed), echoed


def _quoting_last_error(simulator: Simulator, start_exporter: Callable[..., Exporter],
                        token: str) -> Exporter:
    """An exporter polling a database whose lastError quotes the token, once it shows it."""
    connection_id = simulator.connection_ids[0]
    first_db = simulator.databases(connection_id)[0]["id"]
    simulator.patch_database(connection_id, first_db, lastError=f"auth with {token} failed")
    exporter = start_exporter(exporter_config(simulator))
    exporter.wait_for(lambda s: s.value(
        "reflexdb_database_last_error_present", connection_id=connection_id.lower(),
        database_id=first_db.lower(), database_name=simulator.databases(connection_id)[0][
            "name"]) == 1, what="the lastError seen")
    return exporter


def test_a_last_error_quoting_the_token_is_redacted_in_the_log(
        simulator: Simulator, start_exporter: Callable[..., Exporter], token: str) -> None:
    """lastError text goes to the debug log with the token replaced by <redacted>."""
    exporter = _quoting_last_error(simulator, start_exporter, token)
    wait_until(lambda: "auth with <redacted> failed" in exporter.logs(), timeout=10,
               what="the lastError in the debug log")
    assert token not in exporter.logs()


def test_a_last_error_quoting_the_token_is_not_shown_on_the_page(
        simulator: Simulator, start_exporter: Callable[..., Exporter], token: str) -> None:
    """The landing page shows lastError text, but never the token inside it."""
    exporter = _quoting_last_error(simulator, start_exporter, token)
    page = exporter.http.get("/").text
    assert "auth with" in page
    assert token not in page


def test_missing_token_is_a_clear_startup_error(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """With no token file and no environment variable the exporter says so and exits 1."""
    exporter = start_exporter(exporter_config(simulator), token=None, wait_ready=False)
    assert exporter.process.proc.wait(30) == 1
    assert "REFLEXDB_API_TOKEN" in exporter.logs()
    assert "Traceback" not in exporter.logs()
