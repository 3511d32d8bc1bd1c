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

    def reload() -> httpx.Response | None:
        if trigger == "sighup":
            exporter.process.proc.send_signal(signal.SIGHUP)
            return None
        return httpx.post(f"{exporter.url}/-/reload", timeout=10)

    exporter.config_path.write_text("connections:\n  - id: not-a-uuid\nbogus: 1\n")
    answer = reload()
    if trigger == "http":
        # The 500 says why, naming each problem by its path.
        assert answer is not None
        assert answer.status_code == 500
        assert "connections[0].id" in answer.text
        assert "bogus" in answer.text
    exporter.wait_for(lambda s: s.value("reflexdb_exporter_config_last_reload_successful") == 0)
    refused = [line for line in exporter.logs().splitlines() if "config reload refused" in line]
    assert refused
    assert "connections[0].id" in refused[-1]  # so does the log
    polls = exporter.scrape().value("reflexdb_connection_polls_total", connection_id=first) or 0
    exporter.wait_for(lambda s: (s.value("reflexdb_connection_polls_total",
                                         connection_id=first) or 0) > polls + 2,
                      what="the old config to keep polling")

    exporter.config_path.write_text(yaml.safe_dump(exporter_config(
        simulator, connections=[{"id": first}, {"id": third}])))
    answer = reload()
    if trigger == "http":
        assert answer is not None
        assert answer.status_code == 200
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


def _requests_for(simulator: Simulator, connection_id: str, since: float) -> int:
    return sum(1 for r in simulator.requests()
               if r["time"] >= since and r["path"].lower().endswith(connection_id.lower()))


def test_reload_endpoint_is_off_without_the_lifecycle_flag(
        exporter: Exporter, simulator: Simulator) -> None:
    """Without --web.enable-lifecycle, POST and PUT /-/reload get 403 and reload nothing,
    a cross-site form POST included; SIGHUP still reloads."""
    loaded_at = _reload_gauges(exporter)[1]
    for method in ("POST", "PUT"):
        answer = exporter.http.request(method, "/-/reload")
        assert (answer.status_code, answer.text) == (403, "Lifecycle API is not enabled.\n")
    form = exporter.http.post("/-/reload", data={"x": "1"},
                              headers={"Origin": "https://evil.example", "Sec-Fetch-Site":
                                       "cross-site"})
    assert form.status_code == 403
    time.sleep(0.5)
    assert _reload_gauges(exporter)[1] == loaded_at
    assert "config reloaded" not in exporter.logs()
    exporter.process.proc.send_signal(signal.SIGHUP)
    exporter.wait_for(lambda s: (s.value(
        "reflexdb_exporter_config_last_reload_success_timestamp_seconds") or 0) > (loaded_at or 0))
    assert "config reloaded" in exporter.logs()


def test_reloading_an_unchanged_config_sends_no_extra_api_requests(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Five reloads of the same config keep every connection's schedule: no API request is
    sent before the next poll is due; adding a connection polls only that one."""
    first, second, third = simulator.connection_ids
    exporter = start_exporter(exporter_config(simulator, poll_interval="60s", connections=[
        {"id": first}, {"id": second}]), extra_args=["--web.enable-lifecycle"])
    # The first polls all landed (ready); the next are due about 57-60 s from now.
    since = time.time()
    for _ in range(5):
        assert httpx.post(f"{exporter.url}/-/reload", timeout=10).status_code == 200
        exporter.process.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
    time.sleep(6)  # longer than the first-poll spread a restarted poller would use
    assert exporter.logs().count("config reloaded") == 10
    assert _requests_for(simulator, first, since) == 0
    assert _requests_for(simulator, second, since) == 0
    exporter.config_path.write_text(yaml.safe_dump(exporter_config(
        simulator, poll_interval="60s", connections=[{"id": first}, {"id": second},
                                                     {"id": third}])))
    assert httpx.post(f"{exporter.url}/-/reload", timeout=10).status_code == 200
    wait_until(lambda: _requests_for(simulator, third, since) == 1, timeout=10,
               what="the added connection's first poll")
    time.sleep(1)
    assert _requests_for(simulator, first, since) == 0
    assert _requests_for(simulator, second, since) == 0
    assert exporter.scrape().value("reflexdb_connection_up", connection_id=third.lower()) == 1


def test_reload_with_changed_api_settings_restarts_polling(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """A reload that changes api settings re-polls every connection under them."""
    first = simulator.connection_ids[0]
    config = exporter_config(simulator, poll_interval="60s", connections=[{"id": first}])
    exporter = start_exporter(config)
    since = time.time()
    config["api"] = {**config["api"], "timeout": "3s"}
    exporter.config_path.write_text(yaml.safe_dump(config))
    exporter.process.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _requests_for(simulator, first, since) == 1, timeout=10,
               what="a poll under the new api settings")
