"""--shard and --total-shards: each replica exports exactly its share of the connections."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.sharding import owned, shard_of
from tests.conftest import Exporter, Simulator, exporter_config


@pytest.fixture
def big_simulator(tmp_path: Path, token: str) -> Iterator[Simulator]:
    """A static simulator with 8 connections of 2 databases."""
    sim = Simulator(tmp_path, token, connections=8, databases=2)
    yield sim
    sim.close()


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_bad_shard_flags_are_refused(big_simulator: Simulator,
                                     start_exporter: Callable[..., Exporter]) -> None:
    """A shard ordinal outside 0 … total-1 is a clear startup error."""
    exporter = start_exporter(exporter_config(big_simulator), wait_ready=False,
                              extra_args=["--shard=2", "--total-shards=2"])
    assert exporter.process.proc.wait(30) == 1
    assert "--shard: must be from 0" in exporter.logs()


def uuids(count: int, seed: int) -> list[str]:
    """Reproducible random version-4 UUIDs."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


@pytest.mark.parametrize("total", range(1, 9))
def test_shards_cover_every_connection_exactly_once(total: int) -> None:
    """For 1 to 8 shards, 1,000 random connections each land in one shard, sizes within ±35%."""
    ids = uuids(1000, seed=total)
    shards = [owned(ids, shard, total) for shard in range(total)]
    counts = Counter(cid for shard in shards for cid in shard)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    expected = len(ids) / total
    for shard, members in enumerate(shards):
        assert abs(len(members) - expected) <= 0.35 * expected, (shard, len(members), expected)
        member_set = set(members)
        assert members == [cid for cid in ids if cid in member_set], "config order is kept"


def test_shard_of_ignores_case_and_whitespace() -> None:
    """An ID in upper case or with spaces lands in the same shard as its canonical form."""
    for cid in uuids(50, seed=99):
        for total in (2, 3, 7):
            assert shard_of(f" {cid.upper()} ", total) == shard_of(cid, total)
