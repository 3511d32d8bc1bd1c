"""Unit tests of the exposition primitives, the tolerant models and the pause window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.http import accepts_gzip
from exporter.metrics import DATABASE_METRICS
from exporter.models import PauseSchedule, parse_connection, parse_pause_schedule
from exporter.render import escape_label_value, format_value, negotiate, sample_lines
from exporter.spec import MetricSpec, value


def test_golden_escaping_of_labels_and_help() -> None:
    """Backslash, double quote and newline are escaped exactly as the text format defines."""
    spec: MetricSpec[float] = MetricSpec(
        "demo_value", "gauge", 'Help with \\ backslash, "quotes" and a\nnewline.', "exporter", (),
        value(lambda v: v))
    fmt = negotiate(None)
    header = fmt.header(spec)
    line = sample_lines(spec, 'connection_id="' + escape_label_value('a\\b"c\nd') + '"', 2.5)
    assert header == ('# HELP demo_value Help with \\\\ backslash, "quotes" and a\\nnewline.\n'
                      "# TYPE demo_value gauge\n")
    assert line == 'demo_value{connection_id="a\\\\b\\"c\\nd"} 2.5\n'
    family = next(text_string_to_metric_families(header + line))
    assert family.documentation == 'Help with \\ backslash, "quotes" and a\nnewline.'
    assert family.samples[0].labels == {"connection_id": 'a\\b"c\nd'}


def test_openmetrics_header_names_counters_without_total() -> None:
    """In OpenMetrics a counter family drops _total and HELP also escapes quotes."""
    fmt = negotiate("application/openmetrics-text; version=1.0.0")
    assert fmt.openmetrics
    assert fmt.content_type.startswith("application/openmetrics-text")
    spec: MetricSpec[float] = MetricSpec("x_polls_total", "counter", 'a "b"', "exporter", (),
                                         value(lambda v: v))
    assert fmt.header(spec) == '# HELP x_polls a \\"b\\"\n# TYPE x_polls counter\n'
    assert negotiate("text/plain").content_type.startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize(("number", "text"), [
    (1.0, "1"), (0.0, "0"), (-3.0, "-3"), (0.25, "0.25"), (1764131338.123, "1764131338.123"),
    (1e300, "1e+300"), (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN"),
])
def test_format_value(number: float, text: str) -> None:
    """Values print as the shortest text that reads back as the same float."""
    assert format_value(number) == text


@pytest.mark.parametrize(("header", "allowed"), [
    ("gzip", True), ("deflate, gzip;q=1.0, *;q=0.5", True), ("gzip;q=0", False),
    ("identity", False), (None, False), ("*", True), ("br", False),
])
def test_accepts_gzip(header: str | None, allowed: bool) -> None:
    """gzip is used when Accept-Encoding allows it and never when q=0."""
    assert accepts_gzip(header) is allowed


def _at(day: int, hhmm: str) -> float:
    """A Unix time on a given API weekday (0=Sunday) in the week of 2026-11-22 (a Sunday)."""
    hours, minutes = hhmm.split(":")
    return datetime(2026, 11, 22 + day, int(hours), int(minutes), tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("schedule", "day", "time", "active"), [
    ({"pauseAt": "01:00", "resumeAt": "05:00", "days": []}, 3, "02:00", True),
    ({"pauseAt": "01:00", "resumeAt": "05:00", "days": []}, 3, "05:00", False),
    ({"pauseAt": "01:00", "resumeAt": "05:00", "days": [1]}, 3, "02:00", False),
    ({"pauseAt": "22:00", "resumeAt": "06:00", "days": [5]}, 5, "23:30", True),
    ({"pauseAt": "22:00", "resumeAt": "06:00", "days": [5]}, 6, "03:00", True),
    ({"pauseAt": "22:00", "resumeAt": "06:00", "days": [5]}, 6, "23:00", False),
    ({"pauseAt": "22:00", "resumeAt": "06:00", "days": [6]}, 0, "01:00", True),
    ({"pauseAt": "22:00", "resumeAt": "06:00", "days": [0]}, 0, "01:00", False),
    ({"pauseAt": "12:00", "resumeAt": "12:00", "days": []}, 2, "12:00", False),
])
def test_pause_window(schedule: dict[str, object], day: int, time: str, active: bool) -> None:
    """Windows open on listed days (0=Sunday), may run past midnight, and close at resumeAt."""
    parsed = parse_pause_schedule(schedule)
    assert isinstance(parsed, PauseSchedule)
    assert parsed.active(_at(day, time)) is active


@pytest.mark.parametrize("schedule", [
    {"pauseAt": "24:00", "resumeAt": "01:00", "days": []},
    {"pauseAt": "1:00", "resumeAt": "02:00", "days": []},
    {"pauseAt": "01:00", "resumeAt": "02:00", "days": [7]},
    {"pauseAt": "01:00", "resumeAt": "02:00", "days": "weekdays"},
    {"pauseAt": "01:00", "resumeAt": "02:00"},
])
def test_unreadable_schedule_has_no_window(schedule: dict[str, object]) -> None:
    """A malformed schedule still counts as configured but its window is unknown."""
    parsed = parse_pause_schedule(schedule)
    assert parsed is not None
    assert parsed.active(_at(1, "01:30")) is None


def test_models_keep_good_records_and_count_bad_ones() -> None:
    """parse_connection skips id-less or repeated records and canonicalises IDs."""
    db_id = "2489E9AD-2EE2-8E00-8EC9-32D5F69181C0"
    connection = parse_connection({"databases": [
        {"id": db_id, "taskCpu": 10**400, "syncInterval": float("nan"), "status": "running"},
        {"id": db_id.lower()}, {"id": ""}, "x", {"id": "{" + db_id + "}"},
        {"id": "not-a-uuid", "tags": [{"label": "a", "color": "red"}, {"label": "a",
                                                                         "color": "red"}]},
    ]})
    assert connection.invalid_databases == 4
    assert [d.id for d in connection.databases] == [db_id.lower(), "not-a-uuid"]
    first = connection.databases[0]
    assert first.task_cpu is None
    assert first.sync_interval is None
    assert first.status == "running"
    assert len(connection.databases[1].tags) == 1


def test_every_database_family_has_a_unique_name() -> None:
    """No two specs share a name, so no family can be rendered twice."""
    names = [spec.name for spec in DATABASE_METRICS]
    assert len(names) == len(set(names))
