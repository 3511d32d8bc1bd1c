"""Two small rule modules as units: which shard owns a connection, and which metric families
the allowlist or denylist keep."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from exporter.selection import Selection, parse_selection
from exporter.sharding import owned, shard_of

IDS = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(200)]


def _documented(connection_id: str, total: int) -> int:
    """The rule as written: SHA-256 of the lowercase ID, first 8 bytes big-endian, mod N."""
    digest = hashlib.sha256(connection_id.strip().lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % total


@pytest.mark.parametrize("total", [1, 2, 3, 7, 64])
def test_shards_follow_the_documented_hash(total: int) -> None:
    """Every ID's shard is the documented hash, the same for any spelling of the ID."""
    for cid in IDS:
        assert shard_of(cid, total) == _documented(cid, total)
        assert shard_of(f"  {cid.upper()} ", total) == shard_of(cid, total)


def test_the_hash_is_pinned() -> None:
    """A few shards pinned by value, so replicas of different versions agree."""
    pinned = {cid: shard_of(cid, 1000) for cid in IDS[:3]}
    assert pinned == {cid: _documented(cid, 1000) for cid in IDS[:3]}
    assert len(set(pinned.values())) == 3
    digest = hashlib.sha256(b"00000000-0000-0000-0000-000000000001").digest()
    assert shard_of("00000000-0000-0000-0000-000000000001", 2**61 - 1) == \
        int.from_bytes(digest[:8], "big") % (2**61 - 1)


def test_every_connection_has_exactly_one_owner_in_config_order() -> None:
    """The shards partition the connections, each shard keeping the config order, and the
    split is roughly even."""
    total = 4
    parts = [owned(IDS, shard, total) for shard in range(total)]
    assert sorted(cid for part in parts for cid in part) == sorted(IDS)
    for part in parts:
        assert part == [cid for cid in IDS if cid in part]
        assert 25 < len(part) < 75
    assert owned(IDS, 0, 1) == IDS


def test_an_allowlist_keeps_only_whole_matches() -> None:
    """Allowlist patterns must match the whole family name."""
    selection = parse_selection("reflexdb_database_status, reflexdb_connection_.*", None)
    assert selection.allow
    assert selection.keeps("reflexdb_database_status")
    assert not selection.keeps("reflexdb_database_status_since_timestamp_seconds")
    assert selection.keeps("reflexdb_connection_up")
    assert not selection.keeps("reflexdb_exporter_build_info")


def test_a_denylist_drops_only_whole_matches() -> None:
    """Denylist patterns drop what they match whole; everything else stays."""
    selection = parse_selection(None, "reflexdb_database_tag_info,,  ")
    assert not selection.allow
    assert not selection.keeps("reflexdb_database_tag_info")
    assert selection.keeps("reflexdb_database_tag_info_extra")
    assert selection.keeps("reflexdb_connection_up")


def test_no_list_keeps_everything() -> None:
    """Neither flag, or only blanks and commas: every family is served."""
    for allow, deny in ((None, None), ("", ""), (" , ,", None), (None, ",")):
        selection = parse_selection(allow, deny)
        assert selection == Selection()
        assert selection.keeps("anything")


def test_blank_items_are_skipped_not_the_rest() -> None:
    """An empty item between commas is skipped and the items after it still count."""
    selection = parse_selection(",, a ,, b,", None)
    assert [p.pattern for p in selection.patterns] == ["a", "b"]


def test_both_lists_at_once_are_refused() -> None:
    """Setting both flags is an error that says they are mutually exclusive."""
    with pytest.raises(ValueError, match="mutually exclusive") as caught:
        parse_selection("a", "b")
    assert str(caught.value) == ("--metric-allowlist and --metric-denylist are mutually "
                                 "exclusive: set one of them")


@pytest.mark.parametrize(("allow", "deny", "flag"), [("ok,(", None, "--metric-allowlist"),
                                                     (None, "[z", "--metric-denylist")])
def test_a_bad_pattern_names_its_flag(allow: str | None, deny: str | None, flag: str) -> None:
    """A pattern that is not a regular expression is refused, naming the flag and pattern."""
    with pytest.raises(ValueError, match="is not a regular expression") as caught:
        parse_selection(allow, deny)
    bad = (allow or deny or "").split(",")[-1]
    assert str(caught.value).startswith(f"{flag}: {bad!r} is not a regular expression: ")


def test_unmatched_patterns_are_reported() -> None:
    """unmatched() lists exactly the patterns that match no known family, in order."""
    selection = parse_selection("reflexdb_connection_up,reflexdb_typo,reflexdb_database_.*",
                                None)
    names = iter(["reflexdb_connection_up", "reflexdb_database_status"])  # read once only
    assert selection.unmatched(names) == ["reflexdb_typo"]
    assert selection.unmatched([]) == ["reflexdb_connection_up", "reflexdb_typo",
                                       "reflexdb_database_.*"]
