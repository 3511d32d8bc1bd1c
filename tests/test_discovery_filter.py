"""/sd/databases as a unit: the query's filters, which databases they admit, the target groups
and their labels, and the cache that lasts until the store changes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from exporter.discovery import BadQuery, Discovery, Filters
from exporter.models import parse_connection
from exporter.store import Store

CID = str(uuid.UUID(int=1))
OTHER = str(uuid.UUID(int=2))


def _db(n: int, **fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.UUID(int=100 + n)), "name": f"db{n}",
            "endpointUrl": f"db{n}.example:3306", **fields}


def _store(*records: dict[str, Any], name: str = "conn") -> Store:
    store = Store([CID, OTHER], stale_after=300)
    store.success(CID, parse_connection({"name": name, "databases": list(records)}), 0.1)
    return store


def _targets(body: bytes) -> list[str]:
    return [group["targets"][0] for group in json.loads(body)]


def test_filters_parse_repeated_and_comma_separated_values() -> None:
    """status and health_status are repeatable and comma-separated; blanks are dropped."""
    filters = Filters.parse({"status": ["running, failed", "paused"],
                             "health_status": [" ok ,,", ""]})
    assert filters.status == {"running", "failed", "paused"}
    assert filters.health_status == {"ok"}
    assert Filters.parse({}) == Filters()


@pytest.mark.parametrize("query", [{"region": ["eu"]}, {"status": ["x"], "zone": ["a"],
                                                        "app": ["b"]}])
def test_an_unknown_parameter_is_a_bad_query(query: dict[str, list[str]]) -> None:
    """Any other parameter is refused, naming the first unknown one and the known ones."""
    with pytest.raises(BadQuery) as caught:
        Filters.parse(query)
    first = sorted(set(query) - {"status", "health_status"})[0]
    assert str(caught.value) == (f"unknown query parameter {first!r}; "
                                 "filter with status or health_status")


def test_filters_admit_by_status_and_health_together() -> None:
    """A database must pass both filters; a missing status or health counts as unknown."""
    connection = parse_connection({"databases": [
        _db(1, status="running", healthStatus="ok"),
        _db(2, status="running", healthStatus="degraded"),
        _db(3, status="failed"),
        _db(4),
    ]})
    one, two, three, four = connection.databases
    everything = Filters()
    assert all(everything.admits(db) for db in connection.databases)
    running = Filters(status=frozenset({"running"}))
    assert [running.admits(db) for db in (one, two, three, four)] == [True, True, False, False]
    healthy = Filters(health_status=frozenset({"ok"}))
    assert [healthy.admits(db) for db in (one, two, three, four)] == [True, False, False, False]
    both = Filters(frozenset({"running"}), frozenset({"degraded"}))
    assert [both.admits(db) for db in (one, two, three, four)] == [False, True, False, False]
    unknown = Filters(frozenset({"unknown"}), frozenset({"unknown"}))
    assert [unknown.admits(db) for db in (one, two, three, four)] == [False, False, False, True]
    unknown_health = Filters(health_status=frozenset({"unknown"}))
    assert [unknown_health.admits(db) for db in (one, two, three, four)] == [
        False, False, True, True]


def test_each_endpoint_is_a_target_group_with_every_label() -> None:
    """One group per database with an endpoint, labelled with what the API said."""
    store = _store(
        _db(1, status="running", healthStatus="ok", region="eu-west-1", instanceSize="small",
            reflexdbCustomDomain="shop", tags=[{"label": "prod", "color": "red"},
                                               {"label": "eu", "color": "blue"}]),
        _db(2, endpointUrl=None),
        _db(3, name=None, status=None),
        name="Main account")
    groups = json.loads(Discovery(store).answer(Filters()))
    assert len(groups) == 2
    first, third = groups
    assert first == {"targets": ["db1.example:3306"], "labels": {
        "__meta_reflexdb_connection_id": CID,
        "__meta_reflexdb_connection_name": "Main account",
        "__meta_reflexdb_database_id": str(uuid.UUID(int=101)),
        "__meta_reflexdb_database_name": "db1",
        "__meta_reflexdb_status": "running",
        "__meta_reflexdb_health_status": "ok",
        "__meta_reflexdb_region": "eu-west-1",
        "__meta_reflexdb_instance_size": "small",
        "__meta_reflexdb_custom_domain": "shop.reflexdb.cloud",
        "__meta_reflexdb_tags": ",prod,eu,",
    }}
    assert third["labels"] == {
        "__meta_reflexdb_connection_id": CID,
        "__meta_reflexdb_connection_name": "Main account",
        "__meta_reflexdb_database_id": str(uuid.UUID(int=103)),
        "__meta_reflexdb_database_name": "",
        "__meta_reflexdb_status": "",
        "__meta_reflexdb_health_status": "unknown",
        "__meta_reflexdb_region": "",
        "__meta_reflexdb_instance_size": "",
        "__meta_reflexdb_custom_domain": "",
        "__meta_reflexdb_tags": ",,",  # the separators stay, as with tags: no tag between
    }


def test_a_connection_without_a_name_has_an_empty_name_label() -> None:
    """No connection name is an empty label, not a missing one."""
    store = Store([CID], stale_after=300)
    store.success(CID, parse_connection({"databases": [_db(1)]}), 0.1)
    [group] = json.loads(Discovery(store).answer(Filters()))
    assert group["labels"]["__meta_reflexdb_connection_name"] == ""


def test_the_answer_is_compact_utf8_json() -> None:
    """The body is JSON without spaces, non-ASCII kept as UTF-8."""
    store = _store(_db(1, name="bäckerei"), name="Zürich")
    body = Discovery(store).answer(Filters())
    assert "bäckerei".encode() in body
    assert b", " not in body
    assert b'": ' not in body
    assert Discovery(Store([CID], 300)).answer(Filters()) == b"[]"


def test_filters_select_the_listed_databases() -> None:
    """Only databases the filters admit are listed."""
    store = _store(_db(1, status="running"), _db(2, status="failed"), _db(3, status="running"))
    discovery = Discovery(store)
    assert _targets(discovery.answer(Filters(frozenset({"running"})))) == [
        "db1.example:3306", "db3.example:3306"]
    assert _targets(discovery.answer(Filters(frozenset({"failed"})))) == ["db2.example:3306"]


def test_answers_are_cached_until_the_store_changes() -> None:
    """The same filters get the same bytes until a poll lands; then the new list."""
    store = _store(_db(1))
    discovery = Discovery(store)
    first = discovery.answer(Filters())
    assert discovery.answer(Filters()) is first
    store.success(CID, parse_connection({"databases": [_db(1), _db(2)]}), 0.1)
    second = discovery.answer(Filters())
    assert _targets(second) == ["db1.example:3306", "db2.example:3306"]
    assert discovery.answer(Filters()) is second


def test_the_cache_is_bounded() -> None:
    """At most 16 filter combinations are kept; the rest are built each time, still right."""
    store = _store(_db(1, status="running"))
    discovery = Discovery(store)
    combos = [Filters(frozenset({f"s{n}"})) for n in range(20)]
    for combo in combos:
        assert discovery.answer(combo) == b"[]"
    assert discovery.answer(combos[0]) is discovery.answer(combos[0])
    assert discovery.answer(combos[15]) is discovery.answer(combos[15])
    assert discovery.answer(combos[16]) is not discovery.answer(combos[16])


def test_stale_and_unpolled_connections_list_nothing() -> None:
    """A connection never polled, or whose series went stale, lists no targets."""
    store = Store([CID], stale_after=0.0)
    discovery = Discovery(store)
    assert discovery.answer(Filters()) == b"[]"
    store.success(CID, parse_connection({"databases": [_db(1)]}), 0.1)
    assert _targets(discovery.answer(Filters())) == ["db1.example:3306"]
    store.failure(CID, "timeout", 0.1)
    store.expire(10**12)
    assert discovery.answer(Filters()) == b"[]"


def test_a_connection_with_nothing_to_list_does_not_hide_the_next() -> None:
    """An unpolled connection before a polled one: the polled one's targets are listed."""
    store = Store([CID, OTHER], stale_after=300)
    store.success(OTHER, parse_connection({"databases": [_db(1)]}), 0.1)
    assert _targets(Discovery(store).answer(Filters())) == ["db1.example:3306"]


def test_a_lone_surrogate_in_a_name_is_replaced_not_fatal() -> None:
    """JSON may carry a lone surrogate; the answer's bytes replace it with ?."""
    store = _store(_db(1, name="bad\ud800name"))
    body = Discovery(store).answer(Filters())
    assert b'"bad?name"' in body
