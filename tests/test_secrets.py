"""The API token reaches the API as a bearer header and appears nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Exporter, Simulator, exporter_config

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
    simulator.fault(simulator.connection_ids[2], status=500, body=f"echo {token}")
    exporter = start_exporter(config)
    exporter.wait_for(lambda s: (s.value("reflexdb_connection_poll_failures_total",
                                         connection_id=simulator.connection_ids[1].lower(),
                                         reason="unauthorized") or 0) >= 2)
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
    assert "poll failed" in exporter.logs()


def test_missing_token_is_a_clear_startup_error(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """With no token file and no environment variable the exporter says so and exits 1."""
    exporter = start_exporter(exporter_config(simulator), token=None, wait_ready=False)
    assert exporter.process.proc.wait(30) == 1
    assert "REFLEXDB_API_TOKEN" in exporter.logs()
    assert "Traceback" not in exporter.logs()
