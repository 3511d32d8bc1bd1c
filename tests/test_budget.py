"""A token's API budget: the rate holds, a 429 pauses or halves it, and retries pay too."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.budget import MEASURE_WINDOW, RECOVERY_STEPS, Budget
from tests.conftest import Exporter, Simulator, exporter_config

ENV = {"token_source": "env"}  # the default token's source: REFLEXDB_API_TOKEN


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sent_within(budget: Budget, clock: Clock, seconds: float) -> int:
    """How many requests, asking back to back from now on, the budget books within
    ``seconds`` (the one booked past them is left unsent)."""
    sent, end = 0, clock.now + seconds
    while budget.reserve() < end:
        sent += 1
    return sent


def test_the_rate_holds_after_a_burst_of_at_most_burst() -> None:
    """Over 10 s at 2 a second with a burst of 3, 3 go at once and then one every 0.5 s."""
    clock = Clock()
    budget = Budget(2.0, 3, floor=0.1, clock=clock)
    moments = [budget.reserve() - clock.now for _ in range(6)]
    assert moments == [0, 0, 0, 0.5, 1.0, 1.5]
    assert _sent_within(budget, clock, 10.0) == 22 - 6  # the rest of the 22 booked in 10 s


def test_waiting_requests_go_in_order_evenly_spaced() -> None:
    """Twenty polls asking at once on a budget of 4 a second are booked 0.25 s apart, in
    the order they asked: no two at the same moment, none overtaken."""
    clock = Clock()
    budget = Budget(4.0, 1, floor=0.1, clock=clock)
    moments = [budget.reserve() - clock.now for _ in range(20)]
    assert moments == [pytest.approx(0.25 * n) for n in range(20)]


def test_without_a_rate_nothing_waits() -> None:
    """No configured budget: every request goes at once."""
    clock = Clock()
    budget = Budget(None, 2, floor=0.1, clock=clock)
    assert all(budget.reserve() == clock.now for _ in range(1000))


def test_a_pause_stops_every_request_until_it_ends() -> None:
    """After pause(5), nothing is booked before the 5 s are over, then the rate resumes."""
    clock = Clock()
    budget = Budget(10.0, 2, floor=0.1, clock=clock)
    budget.pause(5.0)
    assert _sent_within(budget, clock, 4.99) == 0
    clock.now += 6
    assert budget.reserve() == clock.now


def test_a_cut_halves_the_rate_and_never_goes_below_the_floor() -> None:
    """Each cut halves the limit; the floor stops it; no burst follows a cut; a floor above
    the rate itself leaves the rate as it is."""
    clock = Clock()
    budget = Budget(8.0, 8, floor=1.5, clock=clock)
    budget.cut()
    assert budget.limit == 4.0
    assert _sent_within(budget, clock, 10.0) <= 40
    budget.cut()
    budget.cut()
    assert budget.limit == 1.5
    high = Budget(2.0, 2, floor=5.0, clock=clock)
    high.cut()
    assert high.limit == 2.0


def test_good_answers_recover_the_rate_slowly() -> None:
    """After a cut, RECOVERY_STEPS good answers bring the configured rate back, not fewer."""
    budget = Budget(8.0, 8, floor=0.1, clock=Clock())
    budget.cut()
    for _ in range(RECOVERY_STEPS // 2 - 1):
        budget.recover()
    assert budget.limit is not None
    assert budget.limit < 8.0
    for _ in range(RECOVERY_STEPS):
        budget.recover()
    assert budget.limit == 8.0


def test_without_a_rate_a_cut_starts_from_the_measured_rate_and_is_lifted_later() -> None:
    """A 429 with no Retry-After on an unlimited token limits it to half its measured rate;
    once recovered, the limit goes."""
    clock = Clock()
    budget = Budget(None, 4, floor=0.1, clock=clock)
    for _ in range(int(MEASURE_WINDOW * 6)):  # 6 a second over the window
        assert budget.reserve() == clock.now
        clock.now += 1 / 6
    budget.cut()
    assert budget.limit == pytest.approx(3.0, rel=0.05)
    for _ in range(RECOVERY_STEPS * 2):
        budget.recover()
    assert budget.limit is None


def _by_token(requests: list[dict[str, Any]], since: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for request in requests:
        if request["time"] >= since:
            out.setdefault(request["headers"].get("authorization", ""), []).append(
                request["time"])
    return out


@pytest.fixture
def six(tmp_path: Path, token: str) -> Iterator[Simulator]:
    """A simulator with six connections of two databases each."""
    sim = Simulator(tmp_path, token, connections=6, databases=2)
    yield sim
    sim.close()


@pytest.mark.e2e
def test_requests_per_token_stay_within_the_budget(
        six: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Six connections polled every 0.5 s want 12 requests a second; a budget of 3 a second
    (burst 2) lets at most 3 a second through, each connection in turn, and warns once."""
    config = exporter_config(six, poll_interval="0.5s")
    config["api"].update(requests_per_second=3, max_concurrency=2)
    exporter = start_exporter(config)
    time.sleep(2)
    since = time.time()
    time.sleep(6)
    window = [r for r in six.requests() if r["time"] >= since]
    assert 3 * 6 - 4 <= len(window) <= 3 * 6 + 2, len(window)
    # Spread evenly: every connection had its turn, none twice as often as another.
    per_connection = Counter(r["path"].rsplit("/", 1)[1].lower() for r in window)
    assert len(per_connection) == 6
    assert max(per_connection.values()) - min(per_connection.values()) <= 1, per_connection
    log = exporter.logs()
    assert log.count("api.requests_per_second: 3 per token lets the 6 connections") == 1
    assert "polled every 2s, not every 0.5s" in log
    scrape = exporter.scrape()
    assert scrape.value("reflexdb_api_requests_per_second_limit", **ENV) == 3
    assert scrape.value("reflexdb_api_budget_wait_seconds_total", **ENV) > 1
    assert scrape.value("reflexdb_api_paused_until_timestamp_seconds", **ENV) == 0
    answered = scrape.value("reflexdb_api_requests_total", **ENV, code="200")
    # Every request sent so far, as the simulator counted them (a poll may be in flight).
    received = len(six.requests())
    assert received - 2 <= answered <= received
    assert scrape.value("reflexdb_api_request_duration_seconds_count",
                        **ENV) == answered
    assert scrape.types["reflexdb_api_request_duration_seconds"] == "histogram"
    page = exporter.http.get("/").text
    assert "<td>env</td><td>3/s</td>" in page


@pytest.mark.e2e
def test_retries_come_out_of_the_same_budget(
        six: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Every answer a 500, so every poll retries twice: still at most 3 requests a second."""
    for connection_id in six.connection_ids:
        six.fault(connection_id, status=500, body="{}")
    config = exporter_config(six, poll_interval="0.5s")
    config["api"].update(requests_per_second=3, max_concurrency=2, retries=2)
    exporter = start_exporter(config, wait_ready=False)
    time.sleep(2)
    since = time.time()
    time.sleep(6)
    sent = sum(len(t) for t in _by_token(six.requests(), since).values())
    assert 3 * 6 - 4 <= sent <= 3 * 6 + 2, sent
    retried = sum(v for _, v in exporter.scrape().series("reflexdb_connection_poll_retries_total"))
    assert retried > 0


@pytest.mark.e2e
def test_a_429_with_retry_after_pauses_its_token_on_every_connection(
        tmp_path: Path, six: Simulator, start_exporter: Callable[..., Exporter],
        token: str) -> None:
    """A 429 with Retry-After: 3 for token A stops every request with A for 3 s, on all its
    connections, while the connections on token B go on polling."""
    other = "other-account-token"
    token_file = tmp_path / "other.token"
    token_file.write_text(other)
    ids = six.connection_ids
    for connection_id in ids[3:]:
        six.control("PUT", f"connections/{connection_id}/token", {"token": other})
    config = exporter_config(six, poll_interval="0.5s")
    config["connections"] = ([{"id": i} for i in ids[:3]]
                             + [{"id": i, "token_file": str(token_file)} for i in ids[3:]])
    exporter = start_exporter(config)
    time.sleep(1.5)
    limited, other_auth = f"Bearer {token}", f"Bearer {other}"
    set_at = time.time()
    six.control("PUT", "token-fault", {"token": token, "status": 429, "remaining": 1,
                                       "headers": {"Retry-After": "3"}})
    time.sleep(4.5)
    requests = [r for r in six.requests() if r["time"] >= set_at]
    with_a = [r["time"] for r in requests if r["headers"].get("authorization") == limited]
    # The request the fault answered with 429 starts the pause, the longest gap between
    # token A's requests (a request may reach the simulator before the fault call lands,
    # so it need not be the first since set_at).
    gaps = [later - earlier for earlier, later in itertools.pairwise(with_a)]
    refused_at = with_a[gaps.index(max(gaps))] if gaps else with_a[0]
    assert with_a[-1] - refused_at >= 2.9, "token A never polled again"
    # No request with token A, on any of its three connections, before Retry-After ended;
    # one sent a few ms after the refused one was already in flight when the 429 came back.
    in_pause = [t - refused_at for t in with_a if refused_at + 0.25 < t < refused_at + 2.9]
    assert not in_pause, with_a[:4]
    with_b = [r["time"] for r in requests if r["headers"].get("authorization") == other_auth
              and refused_at < r["time"] < refused_at + 2.9]
    assert len(with_b) >= 6  # 3 connections every 0.5 s carried on through the pause
    scrape = exporter.scrape()
    assert scrape.value("reflexdb_api_requests_total", **ENV, code="429") == 1
    assert scrape.value("reflexdb_api_requests_total", token_source=str(token_file),
                        code="200") > 10
    assert scrape.series("reflexdb_api_requests_total", token_source=str(token_file),
                         code="429") == []
    assert token not in scrape.text
    assert other not in scrape.text


@pytest.mark.e2e
def test_a_pause_shows_on_metrics_while_it_lasts(
        six: Simulator, start_exporter: Callable[..., Exporter], token: str) -> None:
    """During a Retry-After pause the paused-until gauge names its end; afterwards it is 0."""
    exporter = start_exporter(exporter_config(six, poll_interval="0.5s"))
    time.sleep(1)
    six.control("PUT", "token-fault", {"token": token, "status": 429, "remaining": 1,
                                       "headers": {"Retry-After": "4"}})
    paused = exporter.wait_for(lambda s: (s.value(
        "reflexdb_api_paused_until_timestamp_seconds", **ENV) or 0) > 0)
    until = paused.value("reflexdb_api_paused_until_timestamp_seconds", **ENV)
    # No api.requests_per_second: no limit series, yet the pause holds all the same.
    assert paused.value("reflexdb_api_requests_per_second_limit", **ENV) is None
    assert until is not None
    assert time.time() + 1 < until <= time.time() + 4.5
    exporter.wait_for(lambda s: s.value(
        "reflexdb_api_paused_until_timestamp_seconds", **ENV) == 0, timeout=10)


@pytest.mark.e2e
def test_a_429_without_retry_after_halves_the_rate_which_then_recovers(
        six: Simulator, start_exporter: Callable[..., Exporter], token: str) -> None:
    """The limit gauge shows the cut (4 a second to the floor of 3: one poll per interval per
    connection) and then climbs back while answers are good."""
    config = exporter_config(six, poll_interval="2s")  # a floor of 3 polls a second
    config["api"].update(requests_per_second=4)
    exporter = start_exporter(config)
    six.control("PUT", "token-fault", {"token": token, "status": 429, "remaining": 1})
    cut = exporter.wait_for(lambda s: (s.value("reflexdb_api_requests_total", code="429",
                                               **ENV) or 0) == 1)
    # Cut to the floor; a good answer or two may have added 4/50 each before this scrape.
    after_cut = cut.value("reflexdb_api_requests_per_second_limit", **ENV)
    assert after_cut is not None
    assert 3.0 <= after_cut < 3.5
    exporter.wait_for(lambda s: after_cut < (s.value("reflexdb_api_requests_per_second_limit",
                                                     **ENV) or 0) <= 4, timeout=20)


@pytest.mark.e2e
def test_an_ha_pair_of_scrapers_costs_no_extra_api_requests(
        simulator: Simulator, exporter: Exporter) -> None:
    """API requests in 4 s with nobody scraping and in 4 s with two scrapers scraping back to
    back are the same number, give or take the polls at the window's edges."""
    def requests_during(seconds: float) -> int:
        since = time.time()
        time.sleep(seconds)
        return sum(1 for r in simulator.requests() if since <= r["time"] < since + seconds)

    time.sleep(1)
    quiet = requests_during(4)
    stop = threading.Event()
    scraped = [0, 0]

    def scrape(slot: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{exporter.port}", timeout=10) as client:
            while not stop.is_set():
                client.get("/metrics").raise_for_status()
                scraped[slot] += 1

    pair = [threading.Thread(target=scrape, args=(slot,)) for slot in (0, 1)]
    for thread in pair:
        thread.start()
    try:
        busy = requests_during(4)
    finally:
        stop.set()
        for thread in pair:
            thread.join()
    assert min(scraped) > 20
    assert quiet > 10
    assert abs(busy - quiet) <= 3, (quiet, busy)


@pytest.mark.e2e
def test_a_request_without_an_answer_counts_as_code_error(
        simulator: Simulator, exporter: Exporter) -> None:
    """A request that times out has no status code: it is counted as code="error", and its
    duration lands in the histogram's upper buckets, which stay cumulative."""
    simulator.fault(simulator.connection_ids[0], status=200, body="{}", delay=30, remaining=1)
    scrape = exporter.wait_for(lambda s: (s.value("reflexdb_api_requests_total", code="error",
                                                  **ENV) or 0) >= 1, timeout=20)
    buckets = sorted((float(labels["le"]), n) for labels, n in scrape.series(
        "reflexdb_api_request_duration_seconds_bucket", **ENV))
    counts = [n for _, n in buckets]
    assert counts == sorted(counts)
    assert buckets[-1] == (float("inf"), scrape.value(
        "reflexdb_api_request_duration_seconds_count", **ENV))
    # The timed-out request took the whole api.timeout (2 s): not in the buckets under 1 s.
    under_a_second = dict(buckets)[1.0]
    assert counts[-1] - under_a_second >= 1
