"""--shard and --total-shards: each replica exports exactly its share of the connections."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.sharding import owned
from tests.conftest import Exporter, Simulator, exporter_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def big_simulator(tmp_path: Path, token: str) -> Iterator[Simulator]:
    """A static simulator with 8 connections of 2 databases."""
    sim = Simulator(tmp_path, token, connections=8, databases=2)
    yield sim
    sim.close()


def test_two_shards_split_the_connections(big_simulator: Simulator,
                                          start_exporter: Callable[..., Exporter]) -> None:
    """Two replicas poll disjoint sets that together cover every connection once."""
    config = exporter_config(big_simulator)
    ids = [cid.lower() for cid in big_simulator.connection_ids]
    seen: list[str] = []
    for shard in (0, 1):
        exporter = start_exporter(config, extra_args=[f"--shard={shard}", "--total-shards=2"])
        mine = owned(ids, shard, 2)
        scrape = exporter.wait_for(
            lambda s, mine=mine: sum(v for _, v in s.series("reflexdb_connection_up"))
            == len(mine))
        exported = {labels["connection_id"] for labels, _ in
                    scrape.series("reflexdb_connection_up")}
        assert exported == set(mine)
        assert scrape.value("reflexdb_exporter_shard_ordinal") == shard
        assert scrape.value("reflexdb_exporter_total_shards") == 2
        assert scrape.value("reflexdb_exporter_connections") == len(mine)
        requested = {r["path"].rsplit("/", 1)[1].lower() for r in big_simulator.requests()}
        assert set(mine) <= requested
        seen.extend(exported)
        exporter.close()
        big_simulator.control("DELETE", "requests")
    assert sorted(seen) == sorted(ids)


def test_bad_shard_flags_are_refused(big_simulator: Simulator,
                                     start_exporter: Callable[..., Exporter]) -> None:
    """A shard ordinal outside 0 … total-1 is a clear startup error."""
    exporter = start_exporter(exporter_config(big_simulator), wait_ready=False,
                              extra_args=["--shard=2", "--total-shards=2"])
    assert exporter.process.proc.wait(30) == 1
    assert "--shard: must be from 0" in exporter.logs()
