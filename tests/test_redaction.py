"""A token the API quotes in a database's texts reaches no label, page or target list."""

from __future__ import annotations

import pytest

from tests.conftest import Exporter, Simulator

pytestmark = pytest.mark.e2e


def test_a_token_in_a_name_or_tag_is_redacted_everywhere(simulator: Simulator,
                                                         exporter: Exporter, token: str) -> None:
    """A database whose name and tag quote the API token shows ``<redacted>`` in its labels
    on /metrics, on the landing page and in /sd/databases, and never the token."""
    connection = simulator.connection_ids[0]
    # Failed, so the landing page lists it; it keeps the endpointUrl it had while running.
    database = next(db for db in simulator.databases(connection) if db["endpointUrl"])["id"]
    simulator.patch_database(connection, database, name=f"orders-{token}",
                             tags=[{"label": f"owner {token}", "color": "red"}],
                             lastError=f"auth failed for {token}", status="failed",
                             healthStatus="unreachable")
    scrape = exporter.wait_for(lambda s: s.series("reflexdb_database_info",
                                                  database_name="orders-<redacted>"))
    assert scrape.series("reflexdb_database_tag_info", tag="owner <redacted>")
    pages = {"/metrics": scrape.text, "/": exporter.http.get("/").text,
             "/sd/databases": exporter.http.get("/sd/databases").text}
    for path, text in pages.items():
        assert token not in text, path
        assert "<redacted>" in text or "&lt;redacted&gt;" in text, path
