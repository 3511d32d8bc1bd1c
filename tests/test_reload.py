"""Config reload (SIGHUP and POST /-/reload) and clean shutdown."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest
import yaml

from tests.conftest import Exporter, Simulator, exporter_config, patient_config, wait_until

pytestmark = pytest.mark.e2e


def _reload_gauges(exporter: Exporter) -> tuple[float | None, float | None]:
    scrape = exporter.scrape()
    return (scrape.value("reflexdb_exporter_config_last_reload_successful"),
            scrape.value("reflexdb_exporter_config_last_reload_success_timestamp_seconds"))


@pytest.mark.parametrize("trigger", ["sighup", "http"])
def test_reload_refuses_bad_config_and_applies_good_one(
        simulator: Simulator, start_exporter: Callable[..., Exporter], trigger: str) -> None:
    """A broken config is refused (old one keeps polling); a good one adds and removes."""
    first, second, third = (cid.lower() for cid in simulator.connection_ids)
    exporter = start_exporter(exporter_config(simulator, connections=[{"id": first},
                                                                      {"id": second}]),
                              extra_args=["--web.enable-lifecycle"])
    exporter.wait_for(lambda s: len(s.series("reflexdb_database_status", connection_id=second)))
    ok, loaded_at = _reload_gauges(exporter)
    assert ok == 1
    assert loaded_at is not None

    def reload() -> int | None:
        if trigger == "sighup":
            exporter.process.proc.send_signal(signal.SIGHUP)
            return None
        return httpx.post(f"{exporter.url}/-/reload", timeout=10).status_code

    exporter.config_path.write_text("connections:\n  - id: not-a-uuid\nbogus: 1\n")
    status = reload()
    assert status in (None, 500)
    exporter.wait_for(lambda s: s.value("reflexdb_exporter_config_last_reload_successful") == 0)
    assert "config reload refused" in exporter.logs()
    polls = exporter.scrape().value("reflexdb_connection_polls_total", connection_id=first) or 0
    exporter.wait_for(lambda s: (s.value("reflexdb_connection_polls_total",
                                         connection_id=first) or 0) > polls + 2,
                      what="the old config to keep polling")

    exporter.config_path.write_text(yaml.safe_dump(exporter_config(
        simulator, connections=[{"id": first}, {"id": third}])))
    status = reload()
    assert status in (None, 200)
    scrape = exporter.wait_for(
        lambda s: s.value("reflexdb_exporter_config_last_reload_successful") == 1
        and s.series("reflexdb_database_status", connection_id=third))
    assert not [key for key in scrape.samples if ("connection_id", second) in key[1]]
    reloaded_at = scrape.value("reflexdb_exporter_config_last_reload_success_timestamp_seconds")
    assert reloaded_at is not None
    assert reloaded_at > loaded_at
    assert scrape.value("reflexdb_exporter_connections") == 2
    assert scrape.value("reflexdb_connection_up", connection_id=first) == 1


def test_reload_endpoint_wants_post(exporter: Exporter) -> None:
    """GET /-/reload is refused with 405 so a crawler cannot trigger reloads."""
    assert exporter.http.get("/-/reload").status_code == 405


def test_sigterm_with_polls_in_flight_exits_quickly(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """SIGTERM while every API request hangs cancels them and exits 0 within a few seconds."""
    simulator.hang()
    exporter = start_exporter(patient_config(simulator), wait_ready=False)
    wait_until(lambda: len(simulator.requests()) == 3, what="three hanging requests")
    started = time.monotonic()
    exporter.process.proc.send_signal(signal.SIGTERM)
    assert exporter.process.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in exporter.logs()


def test_sigint_exits_zero(exporter: Exporter) -> None:
    """SIGINT (Ctrl-C) is a clean stop too."""
    exporter.process.proc.send_signal(signal.SIGINT)
    assert exporter.process.proc.wait(10) == 0
