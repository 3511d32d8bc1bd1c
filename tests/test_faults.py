"""API faults beyond a single failed poll: retries, rate limits, size caps, tokens, API TLS."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

import pytest

from exporter.client import parse_retry_after
from tests.certs import make_certs
from tests.conftest import Exporter, Scrape, Simulator, exporter_config

pytestmark = pytest.mark.e2e


def _requests_for(sim: Simulator, connection_id: str) -> list[dict[str, object]]:
    return [r for r in sim.requests() if connection_id.lower() in str(r["path"]).lower()]


def _counter(scrape: Scrape, name: str, connection_id: str, **labels: str) -> float:
    return scrape.value(name, connection_id=connection_id.lower(), **labels) or 0.0


def test_server_errors_are_retried_within_a_poll(simulator: Simulator,
                                                 exporter: Exporter) -> None:
    """Two 500s then a good answer: one poll, two retries, no failure, up stays 1."""
    connection_id = simulator.connection_ids[0]
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                        connection_id=connection_id.lower()) == 1)
    simulator.fault(connection_id, status=500, body="boom", remaining=2)
    scrape = exporter.wait_for(lambda s: _counter(
        s, "reflexdb_connection_poll_retries_total", connection_id) == 2, what="two retries")
    assert _counter(scrape, "reflexdb_connection_poll_failures_total", connection_id,
                    reason="server_error") == 0
    assert scrape.value("reflexdb_connection_up", connection_id=connection_id.lower()) == 1


def test_persistent_server_errors_retry_a_bounded_number_of_times(
        simulator: Simulator, exporter: Exporter) -> None:
    """A 503 that does not go away costs at most 1 + retries requests per poll."""
    connection_id = simulator.connection_ids[0]
    simulator.fault(connection_id, status=503, body="<html>maintenance</html>",
                    content_type="text/html")
    scrape = exporter.wait_for(lambda s: _counter(
        s, "reflexdb_connection_poll_failures_total", connection_id, reason="server_error") >= 3)
    simulator.clear_fault(connection_id)
    polls = _counter(scrape, "reflexdb_connection_polls_total", connection_id)
    sent = len(_requests_for(simulator, connection_id))
    assert sent <= polls * 3 + 3  # a poll in flight at scrape time may add its attempts


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_are_never_retried(simulator: Simulator, exporter: Exporter,
                                              status: int) -> None:
    """401, 403 and 404 cost exactly one request per poll."""
    connection_id = simulator.connection_ids[1]
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                        connection_id=connection_id.lower()) == 1)
    simulator.control("DELETE", "requests")
    simulator.fault(connection_id, status=status, body='{"error": "no"}')
    scrape = exporter.wait_for(lambda s: _counter(
        s, "reflexdb_connection_poll_failures_total", connection_id,
        reason={401: "unauthorized", 403: "forbidden", 404: "not_found"}[status]) >= 3)
    simulator.clear_fault(connection_id)
    assert _counter(scrape, "reflexdb_connection_poll_retries_total", connection_id) == 0


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured(simulator: Simulator, exporter: Exporter, form: str) -> None:
    """After a 429 with Retry-After, no request for that connection goes out before it passes."""
    connection_id = simulator.connection_ids[2]
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                        connection_id=connection_id.lower()) == 1)
    wait = 3
    # An HTTP date has whole seconds: it names a moment at least ``wait`` seconds from now.
    until = float(int(time.time() + wait + 1))
    header = str(wait) if form == "seconds" else formatdate(until, usegmt=True)
    simulator.fault(connection_id, status=429, body='{"error": "rate_limited"}',
                    headers={"Retry-After": header}, remaining=1)
    exporter.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                         connection_id, reason="rate_limited") == 1)
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                        connection_id=connection_id.lower()) == 1,
                      timeout=20, what="polling to resume after Retry-After")
    times = [float(str(r["time"])) for r in _requests_for(simulator, connection_id)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    refused = gaps.index(max(gaps))  # the request answered 429 starts the longest gap
    # The pause lasted until the moment Retry-After named (less clock granularity)…
    resume = times[refused] + wait if form == "seconds" else until
    assert times[refused + 1] >= resume - 0.2, (times, resume)
    assert sorted(gaps)[-2] < 1.5, gaps  # …and only once: polling is otherwise every 0.5s


def test_retry_after_parsing() -> None:
    """Retry-After reads delta seconds and HTTP dates, clamps the past to 0, ignores junk."""
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("99999999", now) == 3600


@pytest.mark.parametrize("declared", [True, False])
def test_oversized_answer_is_refused(simulator: Simulator,
                                     start_exporter: Callable[..., Exporter],
                                     declared: bool) -> None:
    """An answer over max_response_size fails as invalid_response, with or without a length."""
    exporter = start_exporter(exporter_config(simulator, api={
        "url": simulator.config["api"]["url"], "timeout": "2s", "max_response_size": "4KiB"}))
    connection_id = simulator.connection_ids[0]
    big = '{"databases": [], "pad": "' + "x" * 20000 + '"}'
    simulator.fault(connection_id, status=200, body=big, truncate=not declared)
    exporter.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                         connection_id, reason="invalid_response") >= 1)


def test_rotated_token_file_is_picked_up_without_restart(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path,
        token: str) -> None:
    """Rewriting api.token_file switches the token at the next poll; no restart needed."""
    token_file = tmp_path / "token"
    token_file.write_text(token)
    config = exporter_config(simulator)
    config["api"]["token_file"] = str(token_file)
    exporter = start_exporter(config, token=None)
    new_token = "tok-rotated-" + token[-8:]
    for connection_id in simulator.connection_ids:
        simulator.control("PUT", f"connections/{connection_id}/token", {"token": new_token})
    connection_id = simulator.connection_ids[0]
    exporter.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                         connection_id, reason="unauthorized") >= 1)
    token_file.write_text(new_token + "\n")
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                        connection_id=connection_id.lower()) == 1)
    assert "API token file changed" in exporter.logs()
    assert new_token not in exporter.logs()
    assert token not in exporter.logs()


def test_api_tls_is_verified_unless_told_otherwise(
        tmp_path: Path, token: str, start_exporter: Callable[..., Exporter]) -> None:
    """An HTTPS API with a private CA fails without ca_file, works with it or with skip-verify."""
    certs = make_certs(tmp_path / "pki")
    (tmp_path / "sim").mkdir()
    sim = Simulator(tmp_path / "sim", token, extra_args=[
        "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)])
    try:
        assert sim.config["api"]["url"].startswith("https://")
        connection_id = sim.connection_ids[0]
        base = exporter_config(sim, connections=[{"id": connection_id}])
        untrusted = start_exporter(base)
        untrusted.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                              connection_id, reason="connect_error") >= 1)
        trusted = start_exporter({**base, "api": {**base["api"], "ca_file": str(certs.ca)}})
        trusted.wait_for(lambda s: s.value("reflexdb_connection_up",
                                           connection_id=connection_id.lower()) == 1)
        reckless = start_exporter({**base, "api": {**base["api"], "insecure_skip_verify": True}})
        reckless.wait_for(lambda s: s.value("reflexdb_connection_up",
                                            connection_id=connection_id.lower()) == 1)
        assert "TLS verification of the API is off" in reckless.logs()
        assert "TLS verification" not in trusted.logs()
    finally:
        sim.close()
