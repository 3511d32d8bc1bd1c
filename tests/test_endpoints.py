"""The HTTP surface: metrics negotiation and gzip, landing page, health, readiness."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import uuid
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

from exporter import __version__
from tests.conftest import (
    Exporter,
    Simulator,
    exporter_config,
    parse_exposition,
    patient_config,
    wait_until,
)

pytestmark = pytest.mark.e2e

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def test_plain_text_is_the_default(exporter: Exporter) -> None:
    """Without an Accept header the answer is text format 0.0.4 and parses cleanly."""
    response = exporter.http.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "content-encoding" not in response.headers
    scrape = parse_exposition(response.text)
    assert "process_resident_memory_bytes" in scrape.names()
    assert "reflexdb_database_status" in scrape.names()


def test_openmetrics_when_prometheus_asks(simulator: Simulator, exporter: Exporter) -> None:
    """Prometheus' Accept header gets OpenMetrics that its strict parser accepts, ending in EOF."""
    exporter.wait_for(lambda s: s.series("reflexdb_database_status"))
    response = exporter.http.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in om_families(response.text)}
    assert families["reflexdb_connection_polls"].type == "counter"
    assert families["reflexdb_database_status"].samples


def _gzip_bytes_with_curl(url: str) -> bytes:
    curl = shutil.which("curl")
    assert curl, "curl is missing"
    return subprocess.run([curl, "-sf", "-H", "Accept-Encoding: gzip", url],
                          capture_output=True, timeout=30, check=True).stdout


def test_gzip_is_honoured_and_decodes_to_the_plain_body(exporter: Exporter) -> None:
    """With Accept-Encoding gzip the body is one gzip stream holding the same series."""
    with httpx.stream("GET", f"{exporter.url}/metrics",
                      headers={"Accept-Encoding": "gzip"}) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        compressed = b"".join(raw.iter_raw())
    plain = exporter.http.get("/metrics", headers={"Accept-Encoding": "identity"}).text
    assert len(compressed) < len(plain) / 3

    def stable(text: str) -> set[str]:
        return {line for line in text.splitlines() if line.startswith("reflexdb_database")}

    # A single gzip member: zlib stops at the end of the first one, so any split would show.
    whole = gzip.decompress(compressed).decode()
    import zlib  # noqa: PLC0415
    first_member = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert first_member.decompress(compressed).decode() == whole
    assert first_member.eof
    assert first_member.unused_data == b""
    assert stable(whole) == stable(plain)
    assert parse_exposition(whole).value("reflexdb_exporter_connections") == 3
    assert whole.rstrip().splitlines()[-1].startswith(("process_", "python_"))
    via_curl = gzip.decompress(_gzip_bytes_with_curl(f"{exporter.url}/metrics")).decode()
    assert stable(via_curl) == stable(plain)


def test_landing_page_lists_connections(simulator: Simulator, exporter: Exporter) -> None:
    """The landing page shows the version, links the metrics and tables every connection."""
    exporter.wait_for(lambda s: s.series("reflexdb_database_status"))
    page = exporter.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'href="/metrics"' in page.text
    assert f"Version {__version__}." in page.text
    for connection_id in simulator.connection_ids:
        assert connection_id.lower() in page.text
    assert page.text.count('<td class="green">up</td>') == 3


def test_health_ready_and_unknown_paths(exporter: Exporter) -> None:
    """/-/healthy and /-/ready answer 200 once polled; other paths 404; POST gets 405."""
    assert exporter.http.get("/-/healthy").status_code == 200
    assert exporter.http.get("/-/ready").status_code == 200
    assert exporter.http.get("/nope").status_code == 404
    assert exporter.http.post("/metrics").status_code == 405
    assert exporter.http.head("/metrics").status_code == 200


def test_not_ready_until_every_connection_was_polled(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """/-/ready is 503 while a connection has not been polled yet, though healthy is 200."""
    simulator.hang()
    exporter = start_exporter(patient_config(simulator), wait_ready=False)
    wait_until(lambda: exporter.http.get("/-/healthy").status_code == 200)
    assert exporter.http.get("/-/ready").status_code == 503
    scrape = exporter.scrape()
    assert scrape.value("reflexdb_connection_up",
                        connection_id=simulator.connection_ids[0].lower()) == 0


def test_custom_telemetry_path(simulator: Simulator,
                               start_exporter: Callable[..., Exporter]) -> None:
    """--web.telemetry-path moves the metrics and the landing page links there."""
    exporter = start_exporter(exporter_config(simulator),
                              extra_args=["--web.telemetry-path", "/x/metrics"])
    assert exporter.http.get("/x/metrics").status_code == 200
    assert exporter.http.get("/metrics").status_code == 404
    assert 'href="/x/metrics"' in exporter.http.get("/").text


def test_sigterm_exits_cleanly(simulator: Simulator,
                               start_exporter: Callable[..., Exporter]) -> None:
    """SIGTERM stops the exporter with exit code 0 and no error logged."""
    exporter = start_exporter(exporter_config(simulator, connections=[
        {"id": simulator.connection_ids[0]}, {"id": str(uuid.uuid4())}]))
    assert exporter.close() == 0
    assert "level=error" not in exporter.logs()
