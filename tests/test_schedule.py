"""When polls go out, read from the simulator's request log: the first ones spread over at
most 5 s, later ones at most 5 % early and never late, at most api.max_concurrency at once."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Exporter, Simulator, exporter_config

pytestmark = pytest.mark.e2e


def _times_by_connection(sim: Simulator) -> dict[str, list[float]]:
    """Arrival times of the API requests, by lowercase connection ID."""
    out: dict[str, list[float]] = {}
    for request in sim.requests():
        path = str(request["path"]).lower()
        if "/connections/" in path:
            out.setdefault(path.rsplit("/", 1)[1], []).append(float(str(request["time"])))
    return out


@pytest.fixture
def many(tmp_path: Path, token: str) -> Iterator[Simulator]:
    """A static simulator with 12 connections of 1 database, so first polls can spread."""
    sim = Simulator(tmp_path, token, connections=12, databases=1)
    yield sim
    sim.close()


def test_first_polls_spread_over_at_most_five_seconds(
        many: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """With a 60 s interval, the 12 first polls land spread out (not in one burst) over no
    more than 5 s."""
    exporter = start_exporter(exporter_config(many, poll_interval="60s"))
    assert exporter.http.get("/-/ready").status_code == 200
    firsts = sorted(times[0] for times in _times_by_connection(many).values())
    assert len(firsts) == 12
    spread = firsts[-1] - firsts[0]
    assert spread <= 5.0 + 0.5, firsts  # FIRST_POLL_SPREAD, plus a loaded machine's delay
    # 12 uniform draws over 5 s span less than a second once in ~10^7 runs: a burst would.
    assert spread >= 1.0, firsts


def test_first_polls_spread_over_the_interval_when_shorter(
        many: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """With a 1 s interval the first polls all land within that second."""
    start_exporter(exporter_config(many, poll_interval="1s"))
    firsts = sorted(times[0] for times in _times_by_connection(many).values())
    assert len(firsts) == 12
    assert firsts[-1] - firsts[0] <= 1.0 + 0.5, firsts


def test_later_polls_are_at_most_five_percent_early_and_never_late(
        simulator: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """Every gap between two polls of a connection lies in [0.95, 1] x poll_interval (plus
    scheduling noise), even when each answer takes 0.4 s: the interval runs from one poll's
    start to the next, so slow answers do not make polls late."""
    interval = 1.5
    exporter = start_exporter(exporter_config(simulator, poll_interval=f"{interval}s"))
    for connection_id in simulator.connection_ids:
        # A slow 404: not retried, so each request is one poll.
        simulator.fault(connection_id, status=404, body='{"error": "not_found"}', delay=0.4)
    time.sleep(0.5)
    simulator.control("DELETE", "requests")
    time.sleep(interval * 8)
    gaps_by_connection = {cid: [b - a for a, b in itertools.pairwise(times)]
                          for cid, times in _times_by_connection(simulator).items()}
    assert len(gaps_by_connection) == 3
    for cid, gaps in gaps_by_connection.items():
        assert len(gaps) >= 5, (cid, gaps)
        assert min(gaps) >= interval * 0.95 - 0.1, (cid, gaps)
        # One gap may be stretched by a loaded machine; the typical one is not late at all,
        # where a schedule counting from the end of the poll would be 0.4 s late each time.
        assert max(gaps) <= interval + 0.35, (cid, gaps)
        assert statistics.median(gaps) <= interval + 0.05, (cid, gaps)
    all_gaps = [gap for gaps in gaps_by_connection.values() for gap in gaps]
    # The early share is random: across all the gaps some are clearly early.
    assert min(all_gaps) < interval - 0.01, all_gaps
    assert exporter.process.proc.poll() is None


def test_at_most_max_concurrency_requests_in_flight(
        many: Simulator, start_exporter: Callable[..., Exporter]) -> None:
    """With api.max_concurrency 2 and every answer taking 1 s, any three requests span at
    least 1 s (a third goes only once one of two has been answered), and two do overlap."""
    delay = 1.0
    for connection_id in many.connection_ids:
        many.fault(connection_id, status=404, body='{"error": "not_found"}', delay=delay)
    start_exporter(exporter_config(many, poll_interval="60s", api={
        "url": many.config["api"]["url"], "timeout": "5s", "max_concurrency": 2}),
        wait_ready=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        arrivals = sorted(t for times in _times_by_connection(many).values() for t in times)
        if len(arrivals) >= 12:
            break
        time.sleep(0.5)
    assert len(arrivals) >= 12, arrivals
    arrivals = arrivals[:12]
    spans = [arrivals[i + 2] - arrivals[i] for i in range(len(arrivals) - 2)]
    assert min(spans) >= delay - 0.1, spans
    # Two at once, not one: pairs arrive close together far more often than a second apart.
    pairs = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(gap < delay / 2 for gap in pairs) >= 3, pairs
