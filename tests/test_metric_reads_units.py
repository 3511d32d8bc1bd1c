"""The metric families' own reads as units: sync modes allowed, connection info, tags, the
pause window and schedule info, and pause windows at their exact edges."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from exporter import fields, metrics, spec
from exporter.models import InvalidResponse, parse_connection, parse_pause_schedule


def _at(day: int, hhmm: str) -> float:
    """A Unix time on an API weekday (0=Sunday) in the week of 2026-11-22, a Sunday."""
    hours, minutes = hhmm.split(":")
    return datetime(2026, 11, 22 + day, int(hours), int(minutes), tzinfo=UTC).timestamp()


def _db(**fields: object) -> SimpleNamespace:
    record = {"id": "6f1c2a9e-0d4b-4a8e-9b1f-3c2d5e6f7a8b", **fields}
    [db] = parse_connection({"databases": [record]}).databases
    return SimpleNamespace(db=db, now=_at(3, "02:30"), status_since=None)


@pytest.fixture
def unseen(monkeypatch: pytest.MonkeyPatch) -> None:
    """No unlisted value seen yet in this process."""
    monkeypatch.setattr(spec, "_unlisted_seen", set())


@pytest.mark.usefixtures("unseen")
def test_sync_modes_allowed_mark_each_mode_and_add_new_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    """Each documented mode is 1 if allowed, else 0; an undocumented one is added at 1 and
    logged under the family's name."""
    view = SimpleNamespace(data=SimpleNamespace(allowed_sync_modes=("binlog", "zz-mode")))
    with caplog.at_level(logging.WARNING, logger="exporter.spec"):
        samples = list(metrics._sync_modes_allowed(view))
    assert samples == [(("poll",), 0.0), (("binlog",), 1.0), (("logical",), 0.0),
                       (("cdc",), 0.0), (("zz-mode",), 1.0)]
    [record] = [r for r in caplog.records if getattr(r, "value", None) == "zz-mode"]
    assert record.metric == "reflexdb_connection_sync_mode_allowed"  # type: ignore[attr-defined]
    assert list(metrics._sync_modes_allowed(SimpleNamespace(data=None))) == []
    none = SimpleNamespace(data=SimpleNamespace(allowed_sync_modes=None))
    assert list(metrics._sync_modes_allowed(none)) == []


def test_connection_info_and_tags_are_ones() -> None:
    """Info and tag samples are exactly 1."""
    data = SimpleNamespace(name="n", customer_id=None, backend="mysql", host="h", port=3306.0)
    assert list(metrics._connection_info(SimpleNamespace(data=data))) == [
        (("n", "", "mysql", "h", "3306"), 1.0)]
    view = _db(tags=[{"label": "prod", "color": "red"}, {"label": "eu", "color": "blue"}])
    assert list(metrics._tags(view)) == [(("prod", "red"), 1.0), (("eu", "blue"), 1.0)]


def test_the_pause_window_value() -> None:
    """0 without a schedule, 1 or 0 inside or outside the window at the poll, absent when
    the schedule cannot be read."""
    assert metrics._pause_window(_db()) == 0.0
    inside = _db(pauseSchedule={"pauseAt": "02:00", "resumeAt": "03:00", "days": []})
    assert metrics._pause_window(inside) == 1.0
    outside = _db(pauseSchedule={"pauseAt": "04:00", "resumeAt": "05:00", "days": []})
    assert metrics._pause_window(outside) == 0.0
    unreadable = _db(pauseSchedule={"pauseAt": "4", "resumeAt": "05:00", "days": []})
    assert metrics._pause_window(unreadable) is None


def test_the_pause_schedule_info_labels() -> None:
    """pause_at, resume_at and the sorted distinct days joined by commas; "" for no days."""
    assert list(metrics._pause_schedule_info(_db())) == []
    days = _db(pauseSchedule={"pauseAt": "22:00", "resumeAt": "06:00", "days": [5, 1, 5]})
    assert list(metrics._pause_schedule_info(days)) == [(("22:00", "06:00", "1,5"), 1.0)]
    every = _db(pauseSchedule={"pauseAt": "22:00", "resumeAt": "06:00", "days": []})
    assert list(metrics._pause_schedule_info(every)) == [(("22:00", "06:00", ""), 1.0)]
    unknown = _db(pauseSchedule={"pauseAt": "22:00", "resumeAt": "06:00", "days": "x"})
    assert list(metrics._pause_schedule_info(unknown)) == [(("22:00", "06:00", ""), 1.0)]


@pytest.mark.parametrize(("schedule", "day", "hhmm", "active"), [
    (("01:30", "05:45", []), 3, "01:29", False),
    (("01:30", "05:45", []), 3, "01:30", True),   # opens at pauseAt exactly
    (("01:30", "05:45", []), 3, "05:44", True),
    (("01:30", "05:45", []), 3, "05:45", False),  # closes at resumeAt exactly
    (("01:30", "05:45", []), 3, "03:59", True),
    (("22:15", "06:10", []), 3, "22:14", False),
    (("22:15", "06:10", []), 3, "22:15", True),
    (("22:15", "06:10", []), 4, "06:09", True),
    (("22:15", "06:10", []), 4, "06:10", False),
    (("22:15", "06:10", [6]), 6, "23:00", True),   # Saturday is 6
    (("22:15", "06:10", [6]), 0, "05:00", True),   # …and runs into Sunday, day 0
    (("22:15", "06:10", [0]), 6, "23:00", False),
    (("00:20", "00:50", [0]), 0, "00:30", True),
    (("00:20", "00:50", [0]), 1, "00:30", False),
])
def test_pause_windows_at_their_edges(schedule: tuple[str, str, list[int]], day: int,
                                      hhmm: str, active: bool) -> None:
    """Windows include pauseAt's minute and exclude resumeAt's, days count 0=Sunday, and an
    overnight window belongs to the day it opened."""
    pause_at, resume_at, days = schedule
    parsed = parse_pause_schedule({"pauseAt": pause_at, "resumeAt": resume_at, "days": days})
    assert parsed is not None
    assert parsed.active(_at(day, hhmm)) is active


@pytest.fixture
def far_timezone() -> Iterator[None]:
    """The process's local time zone set far from UTC, for the test's length."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "KIR-14"  # POSIX form (UTC+14): needs no tz database
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.usefixtures("far_timezone")
def test_pause_windows_are_in_utc_whatever_the_local_zone() -> None:
    """The schedule's times are UTC: the machine's own time zone changes nothing."""
    parsed = parse_pause_schedule({"pauseAt": "01:30", "resumeAt": "05:45", "days": [3]})
    assert parsed is not None
    assert parsed.active(_at(3, "02:00")) is True
    assert parsed.active(_at(3, "12:00")) is False


def test_desired_state_is_one_series_or_none() -> None:
    """desiredState gives one sample of 1 labelled with it, none when missing."""
    assert list(metrics._desired_state(_db(desiredState="running"))) == [(("running",), 1.0)]
    assert list(metrics._desired_state(_db())) == []


@pytest.mark.parametrize(("text", "minute"), [
    ("00:00", 0), ("23:59", 1439), ("12:60", None), ("24:00", None), ("ab:10", None),
    ("10:ab", None), ("1a:30", None), ("10:3b", None), (" 01:05 ", 65), ("0105", None),
])
def test_minutes_read_hh_mm_only(text: str, minute: int | None) -> None:
    """HH:MM with hours 00-23 and minutes 00-59, digits on both sides; else None."""
    assert fields.minutes(text) == minute


@pytest.mark.usefixtures("far_timezone")
def test_timestamps_without_a_zone_are_utc() -> None:
    """A naive ISO time is read as UTC, whatever the machine's zone; an offset is kept."""
    assert fields.timestamp("2026-01-01T00:00:00") == 1767225600.0
    assert fields.timestamp("2026-01-01T01:00:00+01:00") == 1767225600.0
    assert fields.timestamp("2026-01-01T00:00:00Z") == 1767225600.0


@pytest.mark.parametrize("payload", [[1], "x", 5, None])
def test_a_decoded_answer_that_is_no_object_says_so(payload: object) -> None:
    """parse_connection refuses anything but an object, saying it is not one."""
    with pytest.raises(InvalidResponse) as caught:
        parse_connection(payload)
    assert str(caught.value) == "answer is not a JSON object"


def test_a_decoded_answer_without_databases_says_so() -> None:
    """An object without a databases list fails as such."""
    with pytest.raises(InvalidResponse) as caught:
        parse_connection({"databases": "many"})
    assert str(caught.value) == "answer has no databases list"
