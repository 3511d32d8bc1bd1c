"""API faults beyond a single failed poll: retries, rate limits, size caps, tokens, API TLS."""

from __future__ import annotations

import itertools
import json
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
    """Nine 503s in a row cost exactly three polls of 1 + 2 retries each, then polling
    recovers: the retries are neither skipped nor more than api.retries."""
    connection_id = simulator.connection_ids[0]
    ids = {"connection_id": connection_id.lower()}
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up", **ids) == 1)
    before = exporter.scrape()
    simulator.fault(connection_id, status=503, body="<html>maintenance</html>",
                    content_type="text/html", remaining=9)
    exporter.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                         connection_id, reason="server_error") >= 1)
    after = exporter.wait_for(lambda s: s.value("reflexdb_connection_up", **ids) == 1,
                              timeout=30, what="polling to recover")

    def grew(name: str, **labels: str) -> float:
        return (_counter(after, name, connection_id, **labels)
                - _counter(before, name, connection_id, **labels))
    assert grew("reflexdb_connection_poll_failures_total", reason="server_error") == 3
    assert grew("reflexdb_connection_poll_retries_total") == 6


_NO_RETRY = {
    "401": ({"status": 401, "body": '{"error": "no"}'}, "unauthorized"),
    "403": ({"status": 403, "body": '{"error": "no"}'}, "forbidden"),
    "404": ({"status": 404, "body": '{"error": "no"}'}, "not_found"),
    "400": ({"status": 400, "body": '{"error": "bad"}'}, "client_error"),
    "418": ({"status": 418, "body": "teapot"}, "client_error"),
    "not-json": ({"status": 200, "body": "<html>not json</html>"}, "invalid_response"),
    "wrong-shape": ({"status": 200, "body": '{"databases": 5}'}, "invalid_response"),
    "timeout": ({"status": 200, "body": "{}", "delay": 2.5}, "timeout"),
}


@pytest.mark.parametrize("case", list(_NO_RETRY))
def test_other_failures_are_never_retried(simulator: Simulator,
                                          start_exporter: Callable[..., Exporter],
                                          case: str) -> None:
    """401, 403, 404, another 4xx, an invalid answer and a timeout cost exactly one request
    per poll: three faulted answers are three failed polls, no retry, each a poll apart."""
    fault, reason = _NO_RETRY[case]
    exporter = start_exporter(exporter_config(simulator, api={
        "url": simulator.config["api"]["url"], "timeout": "1s"}))
    connection_id = simulator.connection_ids[1]
    ids = {"connection_id": connection_id.lower()}
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up", **ids) == 1)
    simulator.control("DELETE", "requests")
    simulator.fault(connection_id, **fault, remaining=3)
    scrape = exporter.wait_for(lambda s: _counter(
        s, "reflexdb_connection_poll_failures_total", connection_id, reason=reason) == 3
        and s.value("reflexdb_connection_up", **ids) == 1, timeout=30,
        what=f"three {reason} polls, then recovery")
    assert _counter(scrape, "reflexdb_connection_poll_retries_total", connection_id) == 0
    times = [float(str(r["time"])) for r in _requests_for(simulator, connection_id)]
    # The three faulted requests and the first good one: about a poll interval apart (0.5 s,
    # up to 5 % early, and a request sent late can be followed by one on time, so 0.35 s on
    # a loaded machine), never a retry burst's few milliseconds.
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[:4])]
    assert len(gaps) == 3
    assert min(gaps) >= 0.35, gaps


def test_a_dns_failure_counts_as_connect_error(start_exporter: Callable[..., Exporter]) -> None:
    """An API host name that does not resolve fails each poll as connect_error, and the
    log says it cannot be resolved."""
    connection_id = "0b6f5e0c-7b7e-4c1e-9a43-6f4f0e7d2c11"
    exporter = start_exporter({
        "api": {"url": "http://no-such-api.invalid/v1", "timeout": "2s", "retries": 0},
        "poll_interval": "0.5s", "connections": [{"id": connection_id}]})
    scrape = exporter.wait_for(lambda s: (s.value(
        "reflexdb_connection_poll_failures_total", connection_id=connection_id,
        reason="connect_error") or 0) >= 2)
    assert scrape.value("reflexdb_connection_up", connection_id=connection_id) == 0
    assert "cannot resolve no-such-api.invalid" in exporter.logs()


@pytest.mark.parametrize(("status", "reason", "form"), [
    (429, "rate_limited", "seconds"), (429, "rate_limited", "http-date"),
    (503, "server_error", "seconds")])
def test_retry_after_is_honoured(simulator: Simulator, exporter: Exporter, status: int,
                                 reason: str, form: str) -> None:
    """After a 429 or 503 with Retry-After, no request for that connection goes out before it
    passes, not even a retry."""
    connection_id = simulator.connection_ids[2]
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                        connection_id=connection_id.lower()) == 1)
    wait = 5
    # An HTTP date has whole seconds: it names a moment at least ``wait`` seconds from now.
    until = float(int(time.time() + wait + 1))
    header = str(wait) if form == "seconds" else formatdate(until, usegmt=True)
    simulator.fault(connection_id, status=status, body='{"error": "busy"}',
                    headers={"Retry-After": header}, remaining=1)
    exporter.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                         connection_id, reason=reason) == 1)
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up",
                                        connection_id=connection_id.lower()) == 1,
                      timeout=20, what="polling to resume after Retry-After")
    times = [float(str(r["time"])) for r in _requests_for(simulator, connection_id)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    refused = gaps.index(max(gaps))  # the request answered 429 starts the longest gap
    # The pause lasted until the moment Retry-After named (less clock granularity)…
    resume = times[refused] + wait if form == "seconds" else until
    assert times[refused + 1] >= resume - 0.2, (times, resume)
    # …and only once: polling is otherwise every 0.5 s, so no other gap comes near the wait
    # (2.5 s of margin each way for a loaded machine).
    assert sorted(gaps)[-2] < wait / 2, gaps


def test_retry_after_parsing() -> None:
    """Retry-After reads delta seconds and HTTP dates, clamps the past to 0, ignores junk."""
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("99999999", now) == 3600


@pytest.mark.parametrize("form", ["content-length", "chunked"])
def test_oversized_answer_is_refused(simulator: Simulator,
                                     start_exporter: Callable[..., Exporter],
                                     form: str) -> None:
    """An answer over max_response_size fails as invalid_response: refused by its declared
    length, or, sent chunked with no length, stopped while streaming; a chunked answer under
    the cap is read as usual."""
    exporter = start_exporter(exporter_config(simulator, api={
        "url": simulator.config["api"]["url"], "timeout": "2s", "max_response_size": "4KiB"}))
    connection_id = simulator.connection_ids[0]
    ids = {"connection_id": connection_id.lower()}
    exporter.wait_for(lambda s: s.value("reflexdb_connection_up", **ids) == 1)
    big = '{"databases": [], "pad": "' + "x" * 20000 + '"}'  # valid JSON, were it read
    simulator.fault(connection_id, status=200, body=big, chunked=form == "chunked")
    exporter.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                         connection_id, reason="invalid_response") >= 1)
    detail = ("answer is over the size cap" if form == "chunked"
              else f"answer of {len(big)} bytes is over the size cap")
    assert detail in exporter.logs()
    if form == "chunked":
        small = json.dumps({**simulator.fleet()[connection_id.lower()], "databases": []})
        assert len(small) < 4096
        simulator.fault(connection_id, status=200, body=small, chunked=True)
        exporter.wait_for(lambda s: s.value("reflexdb_connection_up", **ids) == 1
                          and s.value("reflexdb_connection_databases", **ids) == 0,
                          what="a small chunked answer read")


def test_an_answer_cut_short_is_invalid(simulator: Simulator, exporter: Exporter) -> None:
    """An answer that ends before its Content-Length fails as invalid_response, unretried."""
    connection_id = simulator.connection_ids[0]
    simulator.fault(connection_id, status=200, body='{"databases": []}', truncate=True)
    scrape = exporter.wait_for(lambda s: _counter(s, "reflexdb_connection_poll_failures_total",
                                                  connection_id, reason="invalid_response") >= 2)
    assert _counter(scrape, "reflexdb_connection_poll_retries_total", connection_id) == 0
    assert "answer was cut short" in exporter.logs()


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
