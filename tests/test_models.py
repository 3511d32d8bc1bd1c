"""The pydantic models read every answer as the hand-written parser they replaced did."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from exporter import models
from exporter.fleet import Fleet
from tests import oracle_models as oracle
from tests.test_properties import payloads

DATABASE_FIELDS = [name for name in oracle.Database.__dataclass_fields__
                   if name not in ("pause_schedule", "tags")]
CONNECTION_FIELDS = [name for name in oracle.Connection.__dataclass_fields__
                     if name != "databases"]


def _answer(databases: int = 20) -> dict[str, Any]:
    fleet = Fleet(1, databases, seed=4, token="t")  # noqa: S106 - never sent
    answer = fleet.answer(next(iter(fleet.connections)))
    assert answer is not None
    return answer


def _same_nan(a: object, b: object) -> bool:
    return a == b or (a != a and b != b)  # noqa: PLR0124 - NaN is never equal to itself


def _assert_matches(ours: models.Connection, theirs: oracle.Connection) -> None:
    for name in CONNECTION_FIELDS:
        assert _same_nan(getattr(ours, name), getattr(theirs, name)), name
    assert [d.id for d in ours.databases] == [d.id for d in theirs.databases]
    for db, expected in zip(ours.databases, theirs.databases, strict=True):
        for name in DATABASE_FIELDS:
            assert _same_nan(getattr(db, name), getattr(expected, name)), name
        assert [(t.label, t.color) for t in db.tags] == [(t.label, t.color)
                                                        for t in expected.tags]
        schedule, old = db.pause_schedule, expected.pause_schedule
        assert (schedule is None) == (old is None)
        if schedule is not None and old is not None:
            assert (schedule.pause_at, schedule.resume_at, schedule.pause_minute,
                    schedule.resume_minute, schedule.days) == (
                old.pause_at, old.resume_at, old.pause_minute, old.resume_minute, old.days)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_any_answer_reads_as_the_old_parser_read_it(payload: dict[str, Any]) -> None:
    """From the bytes and from decoded JSON alike, every field of every record matches."""
    expected = oracle.parse_connection(payload)
    _assert_matches(models.parse_connection(payload), expected)
    body = json.dumps(payload).encode()
    _assert_matches(models.read_connection(body), oracle.parse_connection(json.loads(body)))


def test_a_simulator_answer_reads_as_the_old_parser_read_it() -> None:
    """Every field of a real 20-database answer, uppercase IDs and schedules included."""
    answer = _answer()
    _assert_matches(models.read_connection(json.dumps(answer).encode()),
                    oracle.parse_connection(answer))


@pytest.mark.parametrize(("field", "bad", "read_as"), [
    ("taskCpu", "lots", None), ("syncInterval", True, None), ("status", 7, None),
    ("region", "r" * 300, "r" * 256), ("createdAt", "yesterday", None),
    ("tags", {"label": "x"}, ()), ("pauseSchedule", [], None), ("customerId", "C-1", "c-1"),
])
def test_one_bad_field_leaves_the_other_nineteen_records_intact(field: str, bad: object,
                                                                  read_as: object) -> None:
    """A bad field in one record of 20 degrades that field alone; 19 records are unchanged."""
    answer = _answer()
    good = models.read_connection(json.dumps(answer).encode())
    answer["databases"][7][field] = bad
    read = models.read_connection(json.dumps(answer).encode())
    assert read.invalid_databases == 0
    assert len(read.databases) == 20
    for index, (db, before) in enumerate(zip(read.databases, good.databases, strict=True)):
        if index != 7:
            assert db == before
    attribute = {"createdAt": "created_at", "pauseSchedule": "pause_schedule",
                 "customerId": "customer_id", "taskCpu": "task_cpu",
                 "syncInterval": "sync_interval"}.get(field, field)
    damaged = read.databases[7]
    assert getattr(damaged, attribute) == read_as
    assert {name: getattr(damaged, name) for name in DATABASE_FIELDS if name != attribute} == {
        name: getattr(good.databases[7], name) for name in DATABASE_FIELDS if name != attribute}


def test_records_without_an_id_are_skipped_and_counted() -> None:
    """A record that is not an object, has no id or repeats one is counted, not read."""
    answer = _answer()
    answer["databases"][3] = "x"
    answer["databases"][4] = {"name": "no id"}
    answer["databases"][5] = dict(answer["databases"][6])
    read = models.read_connection(json.dumps(answer).encode())
    assert read.invalid_databases == 3
    assert len(read.databases) == 17


def test_an_undocumented_value_survives() -> None:
    """A status or size the reference does not list is kept as sent, to be exported."""
    answer = _answer(1)
    answer["databases"][0].update(status="hibernating", instanceSize="4xlarge")
    db = models.read_connection(json.dumps(answer).encode()).databases[0]
    assert (db.status, db.instance_size) == ("hibernating", "4xlarge")


@pytest.mark.parametrize(("body", "error"), [
    (b"nope", ValueError), (b'{"databases": []} trailing', ValueError),
    (b"[1, 2]", models.InvalidResponse), (b'{"databases": {}}', models.InvalidResponse),
    (b'{"name": "no list"}', models.InvalidResponse),
])
def test_only_the_shape_of_an_answer_fails_it_whole(body: bytes, error: type[Exception]) -> None:
    """Not JSON, not an object or no databases list fails the poll; nothing else does."""
    with pytest.raises(error):
        models.read_connection(body)


def test_json_that_pydantic_refuses_is_read_by_the_standard_library() -> None:
    """A lone surrogate escape (valid to Python's json) still reads, as it did before."""
    body = b'{"databases": [{"id": "00000000-0000-0000-0000-000000000001", "name": "\\ud800"}]}'
    assert models.read_connection(body).databases[0].name == "\ud800"


def test_a_lone_surrogate_in_a_key_costs_nothing() -> None:
    """Keys pydantic-core cannot take (valid to Python's json) are ignored, like any unknown key,
    in the answer, a record, a tag and a schedule alike."""
    body = (b'{"\\ud800": 1, "name": "c", "databases": [{"id": "00000000-0000-0000-0000-'
            b'000000000001", "\\udc00": 2, "status": "running", "tags": [{"label": "a", '
            b'"\\ud801": 3}], "pauseSchedule": {"pauseAt": "01:00", "\\ud802": 4}}]}')
    read = models.read_connection(body)
    assert read.name == "c"
    assert read.invalid_databases == 0
    db = read.databases[0]
    assert db.status == "running"
    assert [(t.label, t.color) for t in db.tags] == [("a", "")]
    assert db.pause_schedule is not None
    assert db.pause_schedule.pause_minute == 60
